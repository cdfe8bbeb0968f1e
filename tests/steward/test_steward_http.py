"""Issue 17: every steward action over HTTP, on the live registry.

Owns: ``POST /v1/link`` (a routed job with progress, computed without the write lock and
recomputed when records changed meanwhile), ``POST /v1/keys/export`` (a job whose CSV only its
principal may download), constraint filters by person, agency and record, 409s naming the
blocking constraint, and the equity report's 422 for an attribute no record carries.
"""

from __future__ import annotations

import csv
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mpi.identity import relink
from tests.support.api import RECORDS, A, B, World, build_world, close_world


@pytest.fixture
def rw(tmp_path: Path) -> Iterator[World]:
    """A world whose registry holds the small synthetic record set of both agencies."""
    w = build_world(tmp_path)
    for agency in (A, B):
        r = w.post_records(agency, RECORDS[agency])
        assert r.status_code == 200, r.text
    yield w
    close_world(w)


def _job(w: World, job: dict[str, Any], who: str = "steward") -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while job["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
        r = w.client.get(f"/v1/jobs/{job['job_id']}", headers=w.h(who))
        assert r.status_code == 200, r.text
        job = r.json()
    return job


@pytest.mark.integration
def test_relink_over_http_is_a_job_with_progress_and_churn(rw: World) -> None:
    assert rw.client.post("/v1/link", headers=rw.h(A)).status_code == 403
    bad = rw.client.post("/v1/link", json={"engine": "hadoop"}, headers=rw.h("steward"))
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"].endswith("engine")
    r = rw.client.post("/v1/link", json={"engine": "duckdb"}, headers=rw.h("steward"))
    assert r.status_code == 202, r.text
    assert r.json()["kind"] == "relink" and r.json()["total"] == 5
    job = _job(rw, r.json())
    assert job["state"] == "completed", job
    res = job["result"]
    assert res["records"] == rw.registry.stats()["records"]["active"]
    assert res["write_lock_seconds"] is not None and res["write_lock_seconds"] <= res["seconds"]
    assert job["done"] == job["total"] and "re-linked" in job["message"]
    actions = [(e["principal"], e["action"]) for e in rw.audit()]
    assert (rw.ids["steward"], "persons.relink_requested") in actions
    assert (rw.ids["steward"], "persons.relink") in actions


@pytest.mark.integration
def test_live_relink_keeps_the_lock_free_while_splink_computes(rw: World) -> None:
    """While Splink computes, another thread takes the write lock at once (the online path
    keeps serving); records enrolled meanwhile keep their persons through the commit (one
    Splink run); a withdrawal meanwhile makes the re-link compute again."""
    reg = rw.registry
    messages: list[str] = []
    free: list[bool] = []
    late = [RECORDS[A][0] | {"source_record_id": f"late-{i}"} for i in range(2)]

    def try_lock() -> None:
        ok = reg.store.write_lock.acquire(timeout=2)
        free.append(ok)
        if ok:
            reg.store.write_lock.release()

    def progress(msg: str) -> None:
        messages.append(msg)
        if msg.startswith("Splink") and not free:
            t = threading.Thread(target=try_lock)
            t.start()
            t.join()
            res = reg.enrol_records(A, list(enumerate(late, start=1)))  # online writes
            assert not res.problems

    before = reg.stats()["records"]["active"]
    s = relink.link_registry(reg, live=True, progress=progress)
    assert free == [True]
    assert s.records == before + 2
    assert sum(m.startswith("Splink") for m in messages) == 1
    assert any("2 records enrolled meanwhile keep their persons" in m for m in messages)
    keys = {r["source_record_id"]: r["person_key"] for r in (
        reg.get_record(A, f"late-{i}") for i in range(2))}
    assert keys["late-0"] == keys["late-1"]  # one person online, still one after the commit
    messages.clear()

    def withdraw(msg: str) -> None:
        messages.append(msg)
        if msg.startswith("Splink") and len([m for m in messages if m.startswith("Splink")]) == 1:
            reg.withdraw_records(A, ["late-0"])

    s = relink.link_registry(reg, live=True, progress=withdraw)
    assert s.records == before + 1
    assert any("computing again" in m for m in messages)
    assert sum(m.startswith("Splink") for m in messages) == 2


def test_keys_export_job_is_downloadable_by_its_principal_only(rw: World) -> None:
    r = rw.client.post("/v1/keys/export", headers=rw.h("steward"))
    assert r.status_code == 202, r.text
    job = _job(rw, r.json())
    assert job["state"] == "completed" and job["result"]["download"].endswith("/result")
    got = rw.client.get(job["result"]["download"], headers=rw.h("steward"))
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(got.text)))
    assert len(rows) == job["result"]["rows"] == rw.registry.stats()["records"]["active"]
    assert set(rows[0]) == {"agency", "source_record_id", "person_key"}
    assert rw.client.get(job["result"]["download"], headers=rw.h(A)).status_code == 403
    other = rw.client.post("/v1/principals", json={"name": "s2", "role": "steward",
                                                   "human_email": "s2@example.org"},
                           headers=rw.h("admin")).json()["api_key"]
    denied = rw.client.get(job["result"]["download"],
                           headers={"Authorization": f"Bearer {other}"})
    assert denied.status_code == 404 and denied.headers["content-type"] == "application/problem+json"
    assert rw.client.get("/v1/jobs/job_0000/result", headers=rw.h("steward")).status_code == 404
    path = rw.data_dir / "exports" / f"{job['job_id']}.csv"
    assert path.stat().st_mode & 0o777 == 0o600
    actions = [e["action"] for e in rw.audit()]
    assert "keys.export" in actions and "keys.download" in actions


def _singles(w: World, n: int) -> list[str]:
    reg = w.registry
    return [k for k in reg.persons if reg.person_count[reg.person_of[k]] == 1][:n]


def _post(w: World, url: str, body: dict[str, Any], status: int = 200) -> Any:
    r = w.client.post(url, json=body, headers=w.h("steward"))
    assert r.status_code == status, r.text
    return r.json()


def test_constraints_filter_and_409_names_the_blocking_constraint(rw: World) -> None:
    one, two, three = _singles(rw, 3)
    merged = _post(rw, f"/v1/persons/{one}/merge", {"person_keys": [two], "reason": "same"})
    keeper = merged["person_key"]
    (must,) = merged["constraint_ids"]
    recs = rw.client.get(f"/v1/persons/{keeper}", headers=rw.h("steward")).json()["records"]
    # Splitting across the merge's must-link is a 409 naming it.
    refused = _post(rw, f"/v1/persons/{keeper}/split", {
        "groups": [[recs[0]], [recs[1]]], "reason": "two"}, status=409)
    assert f"#{must} (must_link)" in refused["detail"]
    assert refused["errors"] == [{"row": None, "field": "constraint_id",
                                  "reason": f"{must} (must_link) blocks this"}]
    # A cannot-link, then a merge across it: the 409 names the cannot-link.
    item_keys = [keeper, three]
    rec3 = rw.client.get(f"/v1/persons/{three}", headers=rw.h("steward")).json()["records"][0]
    cannot = _post(rw, "/v1/labels", {"labels": [{
        "agency_a": recs[0]["agency"], "source_record_id_a": recs[0]["source_record_id"],
        "agency_b": rec3["agency"], "source_record_id_b": rec3["source_record_id"],
        "is_match": False}]})["constraint_ids"][0]
    refused = _post(rw, f"/v1/persons/{item_keys[0]}/merge",
                    {"person_keys": [item_keys[1]], "reason": "x"}, status=409)
    assert f"#{cannot} (cannot_link)" in refused["detail"]
    # Filters: by person, by record, by agency.
    def ids(query: str) -> set[int]:
        r = rw.client.get(f"/v1/constraints?{query}", headers=rw.h("steward"))
        assert r.status_code == 200, r.text
        return {c["constraint_id"] for c in r.json()["constraints"]}
    assert ids(f"person_key={keeper}") == {must, cannot}
    assert ids(f"person_key={three}") == {cannot}
    assert ids(f"agency={rec3['agency']}&source_record_id={rec3['source_record_id']}") == {cannot}
    assert ids(f"agency={recs[1]['agency']}&source_record_id={recs[1]['source_record_id']}") \
        == {must}
    assert ids("agency=no_such_agency") == set()
    bad = rw.client.get("/v1/constraints?source_record_id=x", headers=rw.h("steward"))
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "source_record_id"
    page = rw.client.get("/v1/constraints?limit=1", headers=rw.h("steward")).json()
    assert page["next_after"] == min(must, cannot)
    listed = [e for e in rw.audit() if e["action"] == "constraints.list"]
    assert not any(keeper in str(e["detail"]) for e in listed)  # a key digest, never the key


def test_unknown_equity_attribute_is_a_422_naming_by(rw: World) -> None:
    r = rw.client.get("/v1/reports/linkage-quality", params={"by": "shoe_size"},
                      headers=rw.h("steward"))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"][0]["field"] == "by"
    assert [e["outcome"] for e in rw.audit()
            if e["action"] == "reports.linkage_quality"][-1] == "invalid"
