"""Records, persons, match, bulk jobs, errors, audit and metrics through the real app.

Owns: agency isolation on records and persons, idempotency keys, all-or-none batches, PUT and
DELETE semantics, the pinned problem+json shape (never a token in any error body), body-size
limits, the 500 path, audit events for reads and writes, bulk jobs and the metrics endpoint.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from mpi.config import Settings
from mpi.identity.registry import Registry
from tests.support.api import RECORDS, A, B, World

PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}


def strip_sid(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k != "source_record_id"}


def assert_problem(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert PROBLEM_KEYS <= set(body) <= PROBLEM_KEYS | {"errors"}
    assert body["type"] == f"https://mpi.dev/problems/{code}" and body["code"] == code
    assert body["status"] == status and body["title"] and body["detail"]
    for e in body.get("errors") or []:
        assert set(e) == {"row", "field", "reason"}
    return body


def record_versions(w: World) -> int:
    return int(w.registry.store.cursor().execute("SELECT count(*) FROM record_version").fetchall()[0][0])


def test_create_read_person_and_agency_isolation(world: World) -> None:
    w = world
    r = w.post_records(A, RECORDS[A][:5])
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["source_record_id"] for x in results] == [x["source_record_id"] for x in RECORDS[A][:5]]
    assert {x["outcome"] for x in results} <= {"new", "linked", "review"}
    assert w.post_records(B, RECORDS[B]).status_code == 200
    sid, key = results[0]["source_record_id"], results[0]["person_key"]
    got = w.client.get(f"/v1/records/{sid}", headers=w.h(A)).json()
    assert got["person_key"] == key and got["agency"] == A and "tokens" not in got
    assert_problem(w.client.get(f"/v1/records/{sid}", headers=w.h(B)), 404, "not_found")
    assert w.client.get(f"/v1/records/{sid}?agency={A}", headers=w.h("steward")).status_code == 200
    assert_problem(w.client.get(f"/v1/records/{sid}", headers=w.h("steward")), 422, "invalid_input")
    # a person linked across agencies: each agency sees only its own records, the steward all
    keys_b = {x["person_key"] for x in w.post_records(B, RECORDS[B]).json()["results"]}
    shared = next(k for k in (x["person_key"] for x in w.post_records(A, RECORDS[A]).json()["results"])
                  if k in keys_b)
    for who in (A, B):
        recs = w.client.get(f"/v1/persons/{shared}", headers=w.h(who)).json()["records"]
        assert recs and {x["agency"] for x in recs} == {who}
    all_recs = w.client.get(f"/v1/persons/{shared}", headers=w.h("steward")).json()["records"]
    assert {x["agency"] for x in all_recs} == {A, B}
    assert_problem(w.client.get("/v1/persons/pk_unknown", headers=w.h(A)), 404, "not_found")


def test_idempotency_key_replays_and_conflicts(world: World) -> None:
    w = world
    hdr = {**w.h(A), "Idempotency-Key": "batch-0001"}
    first = w.client.post("/v1/records", json={"records": RECORDS[A][:3]}, headers=hdr)
    assert first.status_code == 200
    versions, creates = record_versions(w), len([e for e in w.audit() if e["action"] == "records.create"])
    again = w.client.post("/v1/records", json={"records": RECORDS[A][:3]}, headers=hdr)
    assert again.status_code == 200 and again.content == first.content
    assert {x["outcome"] for x in again.json()["results"]} != {"unchanged"}  # stored response
    assert record_versions(w) == versions
    assert len([e for e in w.audit() if e["action"] == "records.create" and e["outcome"] == "ok"]) \
        == creates + 1  # the replay is audited, nothing else written
    other = w.client.post("/v1/records", json={"records": RECORDS[A][3:4]}, headers=hdr)
    assert_problem(other, 409, "conflict")
    assert record_versions(w) == versions
    # keys are per principal: agency B may use the same key string for its own batch
    r = w.client.post("/v1/records", json={"records": RECORDS[B][:1]},
                      headers={**w.h(B), "Idempotency-Key": "batch-0001"})
    assert r.status_code == 200


@pytest.mark.integration
def test_idempotency_keys_expire_after_the_retention(world: World) -> None:
    """A key's response is replayed for ``idempotency_retention_hours``; after that the key is
    forgotten (it may carry another request), and expired responses are deleted."""
    w = world
    start = w.registry.clock()
    hdr = {**w.h(A), "Idempotency-Key": "batch-expiring"}
    first = w.client.post("/v1/records", json={"records": RECORDS[A][:2]}, headers=hdr)
    assert first.status_code == 200
    keep = dt.timedelta(hours=w.registry.settings.idempotency_retention_hours)

    def stored() -> list[tuple[Any, ...]]:
        return w.registry.store.cursor().execute(
            "SELECT idempotency_key, request_hash FROM idempotency_key ORDER BY 1").fetchall()

    w.registry.clock = lambda: start + keep - dt.timedelta(minutes=1)
    assert_problem(w.client.post("/v1/records", json={"records": RECORDS[A][2:3]}, headers=hdr),
                   409, "conflict")  # still within the retention
    w.registry.clock = lambda: start + keep + dt.timedelta(minutes=1)
    hash_before = dict(stored())["batch-expiring"]
    reused = w.client.post("/v1/records", json={"records": RECORDS[A][2:3]}, headers=hdr)
    assert reused.status_code == 200, reused.text
    assert [x["source_record_id"] for x in reused.json()["results"]] == \
        [RECORDS[A][2]["source_record_id"]]
    assert dict(stored())["batch-expiring"] != hash_before  # the new request's response is kept
    again = w.client.post("/v1/records", json={"records": RECORDS[A][2:3]}, headers=hdr)
    assert again.content == reused.content
    # An hour later, another keyed write purges what expired meanwhile.
    other = {**w.h(A), "Idempotency-Key": "batch-other"}
    assert w.client.post("/v1/records", json={"records": RECORDS[A][3:4]},
                         headers=other).status_code == 200
    w.registry.clock = lambda: start + 2 * keep + dt.timedelta(hours=2)
    assert w.client.post("/v1/records", json={"records": RECORDS[A][4:5]},
                         headers={**w.h(A), "Idempotency-Key": "batch-late"}).status_code == 200
    assert [k for k, _h in stored()] == ["batch-late"]


def test_batch_is_all_or_none_and_names_index_and_field(world: World) -> None:
    w = world
    bad = [dict(RECORDS[A][0]), {**RECORDS[A][1], "tokens": {**RECORDS[A][1]["tokens"],
                                                             "given_name": "zz:not-a-token"}},
           dict(RECORDS[A][2]), {**RECORDS[A][3], "schema_version": 99}]
    body = assert_problem(w.post_records(A, bad), 422, "invalid_input")
    assert {(e["row"], e["field"]) for e in body["errors"]} == {(2, "tokens.given_name"),
                                                                (4, "schema_version")}
    assert "none was stored" in body["detail"]
    assert record_versions(w) == 0 and w.registry.stats()["records"] == {}
    dup = [RECORDS[A][0], RECORDS[A][0]]
    body = assert_problem(w.post_records(A, dup), 422, "invalid_input")
    assert {e["row"] for e in body["errors"]} == {1, 2}
    body = assert_problem(w.post_records(A, [{"tokens": []}]), 422, "validation_error")
    assert {(e["row"], e["field"]) for e in body["errors"]} >= {(1, "tokens"), (1, "source_record_id")}
    too_many = {"records": [RECORDS[A][0]] * 10_001}
    assert_problem(w.client.post("/v1/records", json=too_many, headers=w.h(A)), 422, "validation_error")
    invalid = [e for e in w.audit() if e["action"] == "records.create"]
    assert invalid and all(e["outcome"] == "invalid" for e in invalid)


def test_put_replaces_and_delete_withdraws(world: World) -> None:
    w = world
    rec = RECORDS[A][0]
    sid = rec["source_record_id"]
    key = w.post_records(A, [rec]).json()["results"][0]["person_key"]
    same = w.client.put(f"/v1/records/{sid}", json=strip_sid(rec), headers=w.h(A)).json()
    assert same == {"source_record_id": sid, "person_key": key, "outcome": "unchanged"}
    changed = {**strip_sid(rec), "attributes": {"program": "snap"}}
    r = w.client.put(f"/v1/records/{sid}", json=changed, headers=w.h(A))
    assert r.json()["outcome"] == "updated"
    assert w.client.get(f"/v1/records/{sid}", headers=w.h(A)).json()["attributes"] == {"program": "snap"}
    body = assert_problem(w.client.put(f"/v1/records/{sid}", json={**rec, "source_record_id": "other"},
                                       headers=w.h(A)), 422, "invalid_input")
    assert body["errors"][0]["field"] == "source_record_id"
    assert w.client.put(f"/v1/records/{sid}", json={**rec}, headers=w.h(A)).status_code == 200
    gone = w.client.delete(f"/v1/records/{sid}", headers=w.h(A)).json()
    assert gone["outcome"] == "withdrawn"
    assert w.client.get(f"/v1/records/{sid}", headers=w.h(A)).json()["status"] == "withdrawn"
    assert_problem(w.client.delete(f"/v1/records/{sid}", headers=w.h(A)), 404, "not_found")
    assert_problem(w.client.delete(f"/v1/records/{sid}", headers=w.h(B)), 404, "not_found")
    person = w.client.get(f"/v1/persons/{key}", headers=w.h("steward")).json()
    assert person["status"] == "retired" and person["records"] == []


def test_match_grades_and_stores_nothing(world: World) -> None:
    w = world
    w.post_records(A, RECORDS[A][:10])
    versions = record_versions(w)
    r = w.client.post("/v1/match", json=strip_sid(RECORDS[A][0]), headers=w.h(A))
    cands = r.json()["candidates"]
    assert cands[0]["grade"] == "certain" and cands[0]["match_probability"] > 0.9
    assert record_versions(w) == versions
    bad = {**strip_sid(RECORDS[A][0]), "schema_version": 7}
    assert_problem(w.client.post("/v1/match", json=bad, headers=w.h(A)), 422, "invalid_input")
    assert_problem(w.client.post("/v1/match?limit=0", json=strip_sid(RECORDS[A][0]),
                                 headers=w.h(A)), 422, "validation_error")


def test_no_token_or_key_in_any_error_body(world: World) -> None:
    w = world
    rec = RECORDS[A][0]
    tokens = list(rec["tokens"].values())
    secrets_ = tokens + [t.split(":", 1)[1] for t in tokens] + [w.keys[A], w.keys["admin"]]
    alien = {**rec, "tokens": {k: "ffffffff:" + v.split(":", 1)[1] for k, v in rec["tokens"].items()}}
    responses = [
        w.post_records(A, [{**rec, "tokens": {**rec["tokens"], "nope": tokens[0]}}]),
        w.post_records(A, [{**rec, "tokens": {"given_name": tokens[0] + "x"}}]),
        w.post_records(A, [{**rec, "tokens": [tokens[0]]}]),
        w.post_records(A, [{**rec, "tokens": {"given_name": 12}, "extra": tokens[1]}]),
        w.post_records(A, [rec]) and w.post_records(A, [alien]),
        w.client.post("/v1/match", json={"tokens": tokens[:2]}, headers=w.h(A)),
        w.client.post("/v1/records", content=b'{"records": [' + tokens[0].encode(), headers=w.h(A)),
        w.client.put(f"/v1/records/{rec['source_record_id']}", json={**rec, "source_record_id": tokens[0]},
                     headers=w.h(A)),
        w.client.get("/v1/records/x", headers={"Authorization": f"Bearer {w.keys[A]}x"}),
        w.client.get("/v1/audit", headers=w.h(A)),
    ]
    for r in responses:
        assert r.status_code >= 400
        assert r.headers["content-type"].startswith("application/problem+json")
        assert not any(s in r.text for s in secrets_), r.text
        assert "Traceback" not in r.text


def test_body_size_limit_413(tmp_path: Path) -> None:
    reg = Registry(Settings(data_dir=tmp_path, max_body_bytes=2000, max_bulk_body_bytes=3000))
    try:
        client = TestClient(create_app(reg.settings, registry=reg))
        key = (tmp_path / "admin.key").read_text().strip()
        big = {"records": RECORDS[A][:5]}
        assert_problem(client.post("/v1/records", json=big, headers={"X-API-Key": key}), 413,
                       "payload_too_large")

        def chunks() -> Any:  # no Content-Length: the limit applies while streaming
            yield b"x" * 1500
            yield b"x" * 1500

        assert_problem(client.post("/v1/match", content=chunks(), headers={"X-API-Key": key}), 413,
                       "payload_too_large")
        upload = {"file": ("t.jsonl", b"x" * 2500)}
        r = client.post("/v1/bulk", files=upload, headers={"X-API-Key": key})
        assert r.status_code == 403  # under the bulk limit: on to auth (admin may not upload)
    finally:
        reg.close()


def test_internal_error_is_a_bare_500(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from tests.support.api import build_world
    w = build_world(tmp_path)
    w.registry.store.close()  # a real failure under the route: the registry file is gone
    with caplog.at_level(logging.ERROR, logger="mpi.api"):
        r = w.client.get(f"/v1/records/{RECORDS[A][0]['source_record_id']}", headers=w.h(A))
    body = assert_problem(r, 500, "internal_error")
    assert "duckdb" not in r.text.lower() and "Traceback" not in r.text
    assert body["detail"] == "The service could not complete the request."
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["unhandled ConnectionException on GET /v1/records/{source_record_id}"]


def test_audit_events_for_reads_and_writes(world: World) -> None:
    w = world
    sid = RECORDS[A][0]["source_record_id"]
    key = w.post_records(A, RECORDS[A][:2]).json()["results"][0]["person_key"]
    w.client.get(f"/v1/records/{sid}", headers=w.h(A))
    w.client.get(f"/v1/persons/{key}", headers=w.h(A))
    w.client.post("/v1/match", json=strip_sid(RECORDS[A][0]), headers=w.h(A))
    w.client.delete(f"/v1/records/{sid}", headers=w.h(A))
    w.client.get("/v1/persons/pk_missing", headers=w.h(A))
    w.client.get("/v1/audit", headers=w.h(A))  # 403, audited
    seen = {(e["action"], e["outcome"]) for e in w.audit() if e["principal"] == w.ids[A]}
    assert seen >= {("records.create", "ok"), ("records.read", "ok"), ("persons.read", "ok"),
                    ("persons.match", "ok"), ("records.withdraw", "ok"), ("persons.read", "not_found"),
                    ("auth", "denied")}
    admin = {e["action"] for e in w.audit() if e["principal"] == w.ids["admin"]}
    assert {"agencies.create", "principals.create", "principals.list"} <= admin
    text = json.dumps([e["target"] for e in w.audit()])
    assert key not in text and "person:" in text  # persons are named by a digest
    page = w.client.get("/v1/audit?after=0&limit=3", headers=w.h("auditor")).json()
    assert [e["audit_seq"] for e in page["events"]] == [1, 2, 3] and page["next_after"] == 3
    rest = w.client.get(f"/v1/audit?after={page['next_after']}&limit=1000", headers=w.h("auditor")).json()
    assert rest["events"][0]["audit_seq"] == 4
    assert w.client.get("/v1/audit/verify", headers=w.h("auditor")).json()["ok"] is True
    assert w.registry.verify_audit().ok


def wait_job(w: World, job_id: str, who: str = A) -> dict[str, Any]:
    for _ in range(200):
        job: dict[str, Any] = w.client.get(f"/v1/jobs/{job_id}", headers=w.h(who)).json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.05)
    raise AssertionError("job did not finish")


@pytest.mark.integration
def test_bulk_jsonl_and_parquet_jobs(world: World) -> None:
    w = world
    lines = [json.dumps(r) for r in RECORDS[A][:10]]
    lines.insert(3, "{not json")
    lines.insert(6, json.dumps({**RECORDS[A][10], "schema_version": 5}))
    r = w.client.post("/v1/bulk", files={"file": ("a.jsonl", "\n".join(lines).encode())},
                      headers=w.h(A))
    assert r.status_code == 202 and r.json()["state"] in ("queued", "running", "completed")
    job = wait_job(w, r.json()["job_id"])
    assert job["state"] == "completed" and job["total"] == 12 and job["done"] == 12
    assert job["counts"]["rejected"] == 2 and sum(v for k, v in job["counts"].items()
                                                  if k != "rejected") == 10
    assert {(e["row"], e["field"]) for e in job["errors"]} == {(4, None), (7, "schema_version")}
    assert_problem(w.client.get(f"/v1/jobs/{job['job_id']}", headers=w.h(B)), 404, "not_found")
    assert w.client.get(f"/v1/jobs/{job['job_id']}", headers=w.h("steward")).status_code == 200
    recs = RECORDS[B][:8]
    cols = sorted({k for rec in recs for k in rec["tokens"]})
    table = pa.table({"source_record_id": [x["source_record_id"] for x in recs],
                      "schema_version": [x["schema_version"] for x in recs],
                      **{c: [x["tokens"].get(c) for x in recs] for c in cols}})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    r = w.client.post("/v1/bulk", files={"file": ("b.parquet", buf.getvalue())}, headers=w.h(B))
    job = wait_job(w, r.json()["job_id"], B)
    assert job["state"] == "completed" and job["counts"].get("rejected", 0) == 0 and job["done"] == 8
    assert w.registry.stats()["records"]["active"] == 18
    assert_problem(w.client.post("/v1/bulk", files={"file": ("x.csv", b"a,b")}, headers=w.h(A)),
                   422, "invalid_input")
    assert_problem(w.client.post("/v1/bulk", files={"file": ("x.parquet", b"junk")}, headers=w.h(A)),
                   422, "invalid_input")
    assert {e["action"] for e in w.audit()} >= {"records.bulk_upload", "records.bulk"}
    assert w.registry.verify_audit().ok


@pytest.mark.integration
def test_metrics_expose_latency_ingest_and_size(world: World) -> None:
    w = world
    w.post_records(A, RECORDS[A][:4])
    w.client.get(f"/v1/records/{RECORDS[A][0]['source_record_id']}", headers=w.h(A))
    text = w.client.get("/metrics").text
    assert re.search(r'mpi_http_request_duration_seconds_bucket\{le="0.005",method="GET",'
                     r'route="/v1/records/\{source_record_id\}",status="200"\}', text)
    assert 'mpi_http_request_duration_seconds_count{method="POST",route="/v1/records",status="200"}' in text
    assert sum(float(v) for v in re.findall(r'mpi_ingest_records_total\{outcome="\w+"\} (\S+)', text)) == 4
    assert "mpi_registry_" not in text  # registry size is for operators only (Decision 93)
    size = w.client.get("/metrics/registry", headers=w.h("admin")).text
    assert 'mpi_registry_records{status="active"} 4.0' in size
    for t in (text, size):
        assert RECORDS[A][0]["source_record_id"] not in t and "pk_" not in t


def test_openapi_documents_every_route_and_error(world: World) -> None:
    spec = world.client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op.get("summary") and op.get("description"), (method, path)
            assert "500" in op["responses"]
            for status, resp in op["responses"].items():
                if int(status) >= 400:
                    assert list(resp["content"]) == ["application/problem+json"], (path, status)
                else:
                    assert resp.get("content"), (path, status)
    assert "401" in spec["paths"]["/v1/records"]["post"]["responses"]
    assert "409" in spec["paths"]["/v1/records"]["post"]["responses"]
    assert "401" not in spec["paths"]["/healthz"]["get"]["responses"]
