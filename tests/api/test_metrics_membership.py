"""The public ``/metrics`` tells nobody whether an enrolment joined another agency's person
(Decision 93); the registry-size gauges that would tell it are for admin, steward and auditor.

The attacker is a scoped agency S (``key_scope: agency``, Decision 72) that may read the public
``/metrics``. It enrols the tokens of a person held only by agency C (the enrol joins C's
person) and then the tokens of a person nobody holds (a new person). The change each makes to
the public exposition must be the same, series for series; only the latency values themselves
(histogram buckets and sums: timing is not equalised, Decision 72) are left out of the
comparison, not their request counts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.api import RECORDS, A, World, build_world, close_world

C, S = "agency_c", "agency_s"
_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$")


def _series(text: str) -> dict[str, float]:
    """Every sample of an exposition, by name and labels, without timing values (histogram
    buckets and sums) and creation timestamps."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None:
            continue
        name = m.group(1)
        if name.endswith(("_bucket", "_sum", "_created")):
            continue
        out[name + (m.group(2) or "")] = float(m.group(3))
    return out


def _change(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What moved between two readings (series that appeared count from 0)."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def _as(rec: dict[str, Any], sid: str) -> dict[str, Any]:
    return {**rec, "source_record_id": sid}


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    """A world where agency C (shared keys) holds persons 0-5 and S (scoped keys) persons 6-7."""
    w = build_world(tmp_path)
    for agency, scope in ((C, "shared"), (S, "agency")):
        r = w.client.post("/v1/agencies", json={"agency": agency, "key_scope": scope},
                          headers=w.h("admin"))
        assert r.status_code == 201, r.text
        r = w.client.post("/v1/principals", json={"name": agency, "role": "agency",
                                                  "agency": agency}, headers=w.h("admin"))
        w.keys[agency] = r.json()["api_key"]
    recs = RECORDS[A]
    assert w.post_records(C, [_as(r, f"C{i}") for i, r in enumerate(recs[:6])]).status_code == 200
    assert w.post_records(S, [_as(r, f"S{i}") for i, r in enumerate(recs[6:8], 6)]).status_code == 200
    yield w
    close_world(w)


def _enrol(w: World, rec: dict[str, Any], sid: str) -> tuple[dict[str, float], dict[str, float]]:
    """S enrols one record: the change in the public and in the registry-size exposition."""
    public0 = _series(w.client.get("/metrics").text)
    size0 = _series(w.client.get("/metrics/registry", headers=w.h("steward")).text)
    r = w.post_records(S, [_as(rec, sid)])
    assert r.status_code == 200 and r.json()["results"][0]["outcome"] == "new", r.text
    public1 = _series(w.client.get("/metrics").text)
    size1 = _series(w.client.get("/metrics/registry", headers=w.h("steward")).text)
    return _change(public0, public1), _change(size0, size1)


@pytest.mark.integration
def test_public_metrics_do_not_tell_a_join_from_a_new_person(w: World) -> None:
    recs = RECORDS[A]
    held_by_c = recs[2]
    c_key = w.registry.get_record(C, "C2")["person_key"]
    joined_public, joined_size = _enrol(w, held_by_c, "S-probe")
    assert w.registry.get_record(S, "S-probe")["person_key"] == c_key  # it did join C's person
    fresh_public, fresh_size = _enrol(w, recs[21], "S-fresh")  # nobody holds it
    assert joined_public == fresh_public  # the attacker's view: the same
    assert joined_public  # and it is not empty: the request and the ingest were counted
    # The registry-size gauges do move differently (that is why they are not public).
    persons = 'mpi_registry_persons{status="active"}'
    assert joined_size.get(persons, 0.0) == 0.0 and fresh_size.get(persons) == 1.0
    assert not any(k.startswith("mpi_registry_") for k in _series(w.client.get("/metrics").text))


@pytest.mark.integration
def test_registry_metrics_need_an_operator_role(w: World) -> None:
    anon = w.client.get("/metrics/registry")
    assert anon.status_code == 401
    for who in (A, S, "researcher", "approver"):
        r = w.client.get("/metrics/registry", headers=w.h(who))
        assert r.status_code == 403 and r.json()["code"] == "forbidden", who
    for who in ("admin", "steward", "auditor"):
        r = w.client.get("/metrics/registry", headers=w.h(who))
        assert r.status_code == 200, who
        assert r.headers["content-type"].startswith("text/plain")
        assert r.headers["cache-control"] == "no-store"
        text = r.text
        assert 'mpi_registry_records{status="active"} 8.0' in text  # C's 6 and S's 2
        assert "pk_" not in text and "C0" not in text
