"""Membership probing: no route tells an agency that another agency holds a person (issue 15
item 5, issue 16 "accounting without leaks"), and agency-scoped keys (Decision 72).

The attacker is an agency principal that sends keys and tokens of a person held only by agency
C. Each probe compares the answer with the answer for a person nobody holds (a random key, a
person not enrolled yet): status, body and shape must be the same. ``agency_s`` and
``agency_t`` have ``key_scope: agency``; ``agency_a`` keeps the default shared keys.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.policy import POLICY
from mpi.identity.scoped_keys import KeyScopes, held_counts
from mpi.store import persons as pstore
from tests.support.api import RECORDS, A, B, World, build_world, close_world

C, S, T = "agency_c", "agency_s", "agency_t"
_B32 = "abcdefghijklmnopqrstuvwxyz234567"

# Every route an agency principal may call, and how it is probed here (or why it carries no
# person data). A new agency route must be added to one of the two: the test below walks POLICY.
PROBED = {
    "POST /v1/records": "test_enrol_outcome_is_judged_by_own_records_only",
    "GET /v1/records/{source_record_id}": "test_record_reads_and_writes_carry_scoped_keys",
    "PUT /v1/records/{source_record_id}": "test_record_reads_and_writes_carry_scoped_keys",
    "DELETE /v1/records/{source_record_id}": "test_withdrawing_the_last_record_reads_like_unknown",
    "POST /v1/match": "test_match_from_scoped_agency_ignores_other_agencies_persons",
    "GET /v1/persons/{person_key}": "test_person_read_held_by_other_equals_unknown",
    "GET /v1/persons/{person_key}/disclosures": "test_person_read_held_by_other_equals_unknown",
    "GET /v1/persons/{person_key}/consent": "test_person_read_held_by_other_equals_unknown",
    "POST /v1/persons/{person_key}/consent": "test_consent_write_held_by_other_equals_unknown",
    "POST /v1/bulk": "test_bulk_counts_are_judged_by_own_records_only",
    "GET /v1/jobs/{job_id}": "test_bulk_counts_are_judged_by_own_records_only",
}
NO_PERSON_DATA = {
    "POST /v1/labels": "pairs of the agency's own records only; answers name no person key",
    "PUT /v1/datasets/{dataset}": "the agency's data dictionary; no person",
    "GET /v1/datasets": "data dictionaries; no person",
    "GET /v1/schema": "public token contract",
    "GET /healthz": "public", "GET /readyz": "public",
    "GET /metrics": "public: latency and ingest counts as each agency was told them; registry "
    "size is at /metrics/registry for operators (Decision 93, test_metrics_membership.py)",
    "GET /v1/keys/signing": "public", "GET /openapi.json": "public", "GET /docs": "public",
    "GET /docs/oauth2-redirect": "public",
    "GET /v1/verifications": "tasks a steward chose to send: the agency's own record ids only, "
    "never a person key, another agency's name or record (Decision 88)",
    "POST /v1/verifications/{task_id}/answer": "an answer to one of the agency's own tasks",
    "GET /console": "the signed-in role's home page; an agency's names no person",
    "GET /console/verifications": "the page of GET /v1/verifications",
    "POST /console/verifications/{task_id}/answer": "the page of the answer route",
    "GET /console/login": "public", "POST /console/login": "public",
    "POST /console/logout": "ends a session",
}


def _strip(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k != "source_record_id"}


def _as(rec: dict[str, Any], sid: str) -> dict[str, Any]:
    return {**rec, "source_record_id": sid}


def _random_key() -> str:
    return "pk_" + "".join(secrets.choice(_B32) for _ in range(20))


def _problem(r: Any) -> tuple[int, str, dict[str, Any]]:
    body = r.json()
    return r.status_code, r.headers["content-type"], body


def _same_as_unknown(w: World, who: str, url: str, key: str) -> None:
    """The answer for ``key`` equals the answer for a random key that names nobody."""
    probe = w.client.get(url.format(key=key), headers=w.h(who))
    unknown = w.client.get(url.format(key=_random_key()), headers=w.h(who))
    assert probe.status_code == 404, probe.text
    assert _problem(probe) == _problem(unknown)
    assert key not in probe.text


class Probe:
    """A world with agencies A (shared), S and T (scoped) and C, and who holds whom."""

    def __init__(self, w: World) -> None:
        self.w = w
        admin = w.h("admin")
        for agency, scope in ((C, "shared"), (S, "agency"), (T, "agency")):
            r = w.client.post("/v1/agencies", json={"agency": agency, "key_scope": scope},
                              headers=admin)
            assert r.status_code == 201 and r.json()["key_scope"] == scope, r.text
            r = w.client.post("/v1/principals", json={"name": agency, "role": "agency",
                                                      "agency": agency}, headers=admin)
            w.keys[agency] = r.json()["api_key"]
        recs = RECORDS[A]
        # C holds persons 0-11, S holds 6-13 (6-11 shared with C), A holds 16-19.
        self.c_recs = [_as(r, f"C{i}") for i, r in enumerate(recs[:12])]
        self.s_recs = [_as(r, f"S{i}") for i, r in enumerate(recs[6:14], start=6)]
        for who, batch in ((C, self.c_recs), (S, self.s_recs),
                           (A, [_as(r, f"A{i}") for i, r in enumerate(recs[16:20], 16)])):
            assert w.post_records(who, batch).status_code == 200
        reg = w.registry
        held: dict[str, set[str]] = {}
        for agency, batch in ((C, self.c_recs), (S, self.s_recs)):
            for r in batch:
                held.setdefault(reg.get_record(agency, r["source_record_id"])["person_key"],
                                set()).add(agency)
        self.c_only = [(r, reg.get_record(C, r["source_record_id"])["person_key"])
                       for r in self.c_recs[:6]]
        self.c_only = [(r, k) for r, k in self.c_only if held[k] == {C}]
        assert self.c_only, "no person held only by C"
        self.unseen = recs[21:23]  # people nobody enrolled

    def scoped(self, agency: str, master: str) -> str:
        """What the service would call ``master`` for a scoped agency."""
        return self.w.registry.key_scopes.to_agency(agency, master)


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Probe]:
    """One world for the probes that change nothing an other probe looks at."""
    w = build_world(tmp_path_factory.mktemp("probe"))
    yield Probe(w)
    close_world(w)


@pytest.fixture
def probe(tmp_path: Path) -> Iterator[Probe]:
    """A world of its own (for tests that change S's records)."""
    w = build_world(tmp_path)
    yield Probe(w)
    close_world(w)


def test_every_agency_route_is_probed_or_carries_no_person() -> None:
    agency_routes = {r for r, roles in POLICY.items() if "agency" in roles or "*" in roles}
    missing = agency_routes - set(PROBED) - set(NO_PERSON_DATA)
    assert not missing, f"classify these agency routes for membership probing: {sorted(missing)}"


@pytest.mark.parametrize("url", ["/v1/persons/{key}", "/v1/persons/{key}/disclosures",
                                 "/v1/persons/{key}/consent"])
@pytest.mark.parametrize("who", [A, B, S, T])
def test_person_read_held_by_other_equals_unknown(seen: Probe, who: str, url: str) -> None:
    probe = seen
    for _rec, master in probe.c_only[:2]:
        _same_as_unknown(probe.w, who, url, master)
        _same_as_unknown(probe.w, who, url, probe.scoped(S, master))
        _same_as_unknown(probe.w, who, url, probe.scoped(T, master))
    # A scoped agency cannot use the master key of a person it does hold either.
    shared_with_c = probe.w.registry.get_record(S, "S6")["person_key"]
    _same_as_unknown(probe.w, S, url, shared_with_c)
    assert probe.w.client.get(url.format(key=probe.scoped(S, shared_with_c)),
                              headers=probe.w.h(S)).status_code == 200


@pytest.mark.parametrize("who", [A, S])
def test_consent_write_held_by_other_equals_unknown(seen: Probe, who: str) -> None:
    probe, w = seen, seen.w
    body = {"decision": "opt_out", "reason": "probe"}
    for _rec, master in probe.c_only[:2]:
        for key in (master, probe.scoped(S, master)):
            r = w.client.post(f"/v1/persons/{key}/consent", json=body, headers=w.h(who))
            unknown = w.client.post(f"/v1/persons/{_random_key()}/consent", json=body,
                                    headers=w.h(who))
            assert r.status_code == 404 and _problem(r) == _problem(unknown)
            assert key not in r.text


def test_match_from_scoped_agency_ignores_other_agencies_persons(seen: Probe) -> None:
    probe, w = seen, seen.w
    for rec, master in probe.c_only:
        r = w.client.post("/v1/match", json=_strip(rec), headers=w.h(S))
        assert r.status_code == 200
        keys = [c["person_key"] for c in r.json()["candidates"]]
        assert master not in keys and probe.scoped(S, master) not in keys
        for k in keys:  # every candidate is a person S holds, by S's key
            assert w.client.get(f"/v1/persons/{k}", headers=w.h(S)).status_code == 200
    # Differential: the same tokens answer the same before and after C enrols the person.
    fresh = probe.unseen[0]
    before = w.client.post("/v1/match", json=_strip(fresh), headers=w.h(S)).json()
    assert w.post_records(C, [_as(fresh, "C-late")]).status_code == 200
    after = w.client.post("/v1/match", json=_strip(fresh), headers=w.h(S)).json()
    assert before == after
    # Shared keys keep today's documented behaviour: the agency learns the MPI knows them.
    shared = w.client.post("/v1/match", json=_strip(fresh), headers=w.h(A)).json()
    assert shared["candidates"][0]["person_key"] == w.registry.get_record(C, "C-late")["person_key"]


def test_match_from_scoped_agency_finds_its_own_person(seen: Probe) -> None:
    probe, w = seen, seen.w
    rec = probe.s_recs[-1]
    master = w.registry.get_record(S, rec["source_record_id"])["person_key"]
    top = w.client.post("/v1/match", json=_strip(rec), headers=w.h(S)).json()["candidates"][0]
    assert top["person_key"] == probe.scoped(S, master) != master and top["grade"] == "certain"


def _ingest_counts(w: World) -> dict[str, float]:
    text = w.client.get("/metrics").text
    return {m[0]: float(m[1]) for m in
            re.findall(r'^mpi_ingest_records_total\{outcome="(\w+)"\} ([0-9.e+]+)$', text, re.M)}


@pytest.mark.integration
def test_enrol_outcome_is_judged_by_own_records_only(probe: Probe) -> None:
    w = probe.w
    rec, master = probe.c_only[0]
    before = _ingest_counts(w)
    joined = w.post_records(S, [_as(rec, "S-probe")]).json()["results"][0]
    fresh = w.post_records(S, [_as(probe.unseen[1], "S-fresh")]).json()["results"][0]
    after = _ingest_counts(w)
    assert joined["outcome"] == fresh["outcome"] == "new"  # a shared agency would see "linked"
    assert after.get("linked", 0) == before.get("linked", 0)  # nor does /metrics tell
    assert joined["person_key"] == probe.scoped(S, master) != master
    # A second record of the same person is linked: S holds it now.
    again = w.post_records(S, [_as(rec, "S-probe-2")]).json()["results"][0]
    assert again["outcome"] == "linked" and again["person_key"] == joined["person_key"]
    # Two copies in one batch: the first is new, the second linked to it.
    two = w.post_records(S, [_as(probe.c_only[-1][0], "S-x1"), _as(probe.c_only[-1][0], "S-x2")])
    if len(probe.c_only) > 1:
        assert [x["outcome"] for x in two.json()["results"]] == ["new", "linked"]


@pytest.mark.integration
def test_record_reads_and_writes_carry_scoped_keys(probe: Probe) -> None:
    w = probe.w
    rec, master = probe.c_only[0]
    r = w.client.get("/v1/records/S6", headers=w.h(S)).json()
    m6 = w.registry.get_record(S, "S6")["person_key"]
    assert r["person_key"] == probe.scoped(S, m6) != m6
    # Replacing S6 with the tokens of C's person: the key S gets is its own; reads show S only.
    put = w.client.put("/v1/records/S6", json=_strip(rec), headers=w.h(S)).json()
    assert put["outcome"] == "updated" and put["person_key"] == probe.scoped(S, master)
    person = w.client.get(f"/v1/persons/{put['person_key']}", headers=w.h(S)).json()
    assert person["records"] == [{"agency": S, "source_record_id": "S6"}]
    assert w.client.get("/v1/records/S6", headers=w.h(S)).json()["person_key"] == put["person_key"]
    # The steward and the shared agency C keep using the master key.
    steward = w.client.get(f"/v1/persons/{master}", headers=w.h("steward")).json()
    assert {"agency": S, "source_record_id": "S6"} in steward["records"]
    assert w.client.get("/v1/records/C0", headers=w.h(C)).json()["person_key"] == \
        w.registry.get_record(C, "C0")["person_key"]


@pytest.mark.integration
def test_withdrawing_the_last_record_reads_like_unknown(probe: Probe) -> None:
    w = probe.w
    # S6 is a person C also holds; S13 one only S holds. After S withdraws either, both keys
    # answer exactly like an unknown key: S cannot tell that C still holds the first.
    gone = {}
    for sid in ("S6", "S13"):
        r = w.client.delete(f"/v1/records/{sid}", headers=w.h(S))
        assert r.status_code == 200 and r.json()["outcome"] == "withdrawn"
        gone[sid] = r.json()["person_key"]
    for key in gone.values():
        _same_as_unknown(w, S, "/v1/persons/{key}", key)
        _same_as_unknown(w, S, "/v1/persons/{key}/disclosures", key)
    # The same for a shared agency (it used to read 200 with records: [] for the first).
    a16 = w.client.delete("/v1/records/A16", headers=w.h(A)).json()["person_key"]
    _same_as_unknown(w, A, "/v1/persons/{key}", a16)
    m6 = w.registry.get_record(S, "S6")["person_key"]
    assert w.client.get(f"/v1/persons/{m6}", headers=w.h("steward")).status_code == 200


@pytest.mark.integration
def test_bulk_counts_are_judged_by_own_records_only(probe: Probe) -> None:
    w = probe.w
    lines = [json.dumps(_as(rec, f"SB{i}")) for i, (rec, _k) in enumerate(probe.c_only)]
    lines.append(json.dumps(_as(probe.unseen[1], "SB-fresh")))
    r = w.client.post("/v1/bulk", files={"file": ("t.jsonl", io.BytesIO(
        ("\n".join(lines) + "\n").encode()), "application/jsonl")}, headers=w.h(S))
    assert r.status_code == 202, r.text
    for _ in range(400):
        job = w.client.get(f"/v1/jobs/{r.json()['job_id']}", headers=w.h(S)).json()
        if job["state"] not in ("queued", "running"):
            break
        time.sleep(0.05)
    assert job["state"] == "completed" and job["counts"] == {"new": len(lines)}


@pytest.mark.integration
def test_merge_and_split_forward_scoped_keys(probe: Probe) -> None:
    w = probe.w
    reg = w.registry
    k12, k13 = (reg.get_record(S, s)["person_key"] for s in ("S12", "S13"))
    c_master = probe.c_only[0][1]
    res = w.client.post(f"/v1/persons/{k12}/merge", json={"person_keys": [k13, c_master],
                        "reason": "one person"}, headers=w.h("steward")).json()
    survivor = res["person_key"]
    for old in {k12, k13, c_master} - {survivor}:
        p = w.client.get(f"/v1/persons/{probe.scoped(S, old)}", headers=w.h(S))
        if old == c_master:  # S never held it under this key, but holds its successor now
            assert p.status_code == 200
        body = p.json()
        assert body["status"] == "retired"
        assert body["superseded_by"] == [probe.scoped(S, survivor)]
    now = w.client.get(f"/v1/persons/{probe.scoped(S, survivor)}", headers=w.h(S)).json()
    assert {r["source_record_id"] for r in now["records"]} == {"S12", "S13"}
    # Split S13 off again (the merge's must-links revoked first): each of S's records ends on
    # a person whose record list, for S, is that record only.
    for c in w.client.get("/v1/constraints", headers=w.h("steward")).json()["constraints"]:
        assert w.client.post(f"/v1/constraints/{c['constraint_id']}/revoke",
                             json={"reason": "test"}, headers=w.h("steward")).status_code == 200
    groups = [[{"agency": S, "source_record_id": "S12"}, {"agency": C, "source_record_id": "C0"}],
              [{"agency": S, "source_record_id": "S13"}]]
    split = w.client.post(f"/v1/persons/{survivor}/split", json={"groups": groups,
                          "reason": "two people"}, headers=w.h("steward"))
    assert split.status_code == 200, split.text
    for sid in ("S12", "S13"):
        key = w.client.get(f"/v1/records/{sid}", headers=w.h(S)).json()["person_key"]
        assert w.client.get(f"/v1/persons/{key}", headers=w.h(S)).json()["records"] == [
            {"agency": S, "source_record_id": sid}]


@pytest.mark.integration
def test_in_memory_holdings_match_the_registry_file(probe: Probe) -> None:
    """What a scoped agency is told is judged from the match state; it must agree with the
    records stored, through updates, withdrawals and a merge."""
    w, reg = probe.w, probe.w.registry
    w.client.put("/v1/records/S7", json=_strip(probe.c_only[0][0]), headers=w.h(S))
    w.client.delete("/v1/records/S8", headers=w.h(S))
    k12, k13 = (reg.get_record(S, s)["person_key"] for s in ("S12", "S13"))
    assert held_counts(reg, S, [k12, k13]) == {k12: 1, k13: 1}  # built before the merge
    w.client.post(f"/v1/persons/{k12}/merge", json={"person_keys": [k13], "reason": "x"},
                  headers=w.h("steward"))
    w.post_records(S, [_as(probe.unseen[0], "S-new")])
    keys = list(reg.persons)
    for agency in (S, C, A):
        assert held_counts(reg, agency, keys) == pstore.agency_record_counts(
            reg.store.cursor(), keys, agency=agency)


@pytest.mark.integration
def test_admin_sets_and_changes_key_scope(probe: Probe) -> None:
    w = probe.w
    admin = w.h("admin")
    scopes = {a["agency"]: a["key_scope"] for a in
              w.client.get("/v1/agencies", headers=admin).json()["agencies"]}
    assert scopes[A] == "shared" and scopes[S] == "agency"
    bad = w.client.post("/v1/agencies", json={"agency": "x", "key_scope": "secret"}, headers=admin)
    assert bad.status_code == 422 and "key_scope" in bad.text
    assert w.client.patch("/v1/agencies/nobody", json={"key_scope": "agency"},
                          headers=admin).status_code == 404
    key_s = w.client.get("/v1/records/S6", headers=w.h(S)).json()["person_key"]
    r = w.client.patch(f"/v1/agencies/{S}", json={"key_scope": "shared"}, headers=admin)
    assert r.status_code == 200 and r.json()["key_scope"] == "shared"
    master = w.client.get("/v1/records/S6", headers=w.h(S)).json()["person_key"]
    assert master == w.registry.get_record(S, "S6")["person_key"] != key_s
    # The setting is in the registry: it survives a restart.
    assert w.client.patch(f"/v1/agencies/{S}", json={"key_scope": "agency"},
                          headers=admin).status_code == 200
    events = [e for e in w.audit() if e["action"] == "agencies.update" and e["outcome"] == "ok"]
    assert len(events) == 2


@pytest.mark.integration
def test_scoped_key_setting_and_keys_survive_restart(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    try:
        Probe(w)
        key = w.client.get("/v1/records/S6", headers=w.h(S)).json()["person_key"]
        keys = dict(w.keys)
    finally:
        close_world(w)
    w2 = build_world_again(tmp_path, keys)
    try:
        assert w2.client.get("/v1/records/S6", headers=w2.h(S)).json()["person_key"] == key
    finally:
        close_world(w2)


def build_world_again(tmp_path: Path, keys: dict[str, str]) -> World:
    """Re-open a world's data directory with the keys it had."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from mpi.config import Settings
    from mpi.identity.registry import Registry
    reg = Registry(Settings(data_dir=tmp_path / "data"))
    w = World(TestClient(create_app(reg.settings, registry=reg)), reg, tmp_path / "data")
    w.keys.update(keys)
    return w


def test_scoped_keys_are_a_keyed_permutation() -> None:
    one = KeyScopes(secrets.token_bytes(32), {S: "agency", T: "agency"})
    other = KeyScopes(secrets.token_bytes(32), {S: "agency"})
    keys = [_random_key() for _ in range(500)]
    for k in keys:
        s = one.to_agency(S, k)
        assert re.fullmatch(r"pk_[a-z2-7]{20}", s) and s != k
        assert one.to_master(S, s) == k
        assert one.to_agency(T, k) != s and other.to_agency(S, k) != s
    assert len({one.to_agency(S, k) for k in keys}) == len(keys)
    assert one.to_master(S, "pk_not-a-key") is None
    # Keys not minted by mint_key (test fixtures only) still get a stable one-way scoped key.
    assert one.to_agency(S, "pk_test000000000000001") == one.to_agency(S, "pk_test000000000000001")
    assert one.is_scoped(S) and not one.is_scoped(A) and not one.is_scoped(None)
