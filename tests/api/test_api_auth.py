"""Authentication and authorization: the role x route matrix over every route of the app,
401 for missing/wrong/revoked keys, 403 for wrong roles (audited), key rotation and
revocation, the rate limit, and agency isolation (a property test over random principals,
routes and targets never shows an agency another agency's source ids).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.main import create_app, route_keys
from api.policy import POLICY, PUBLIC
from mpi.config import Settings
from tests.support.api import RECORDS, ROLE_NAMES, A, B, World, build_world
from tests.support.models import LATEST_DEFAULT

REC = RECORDS[A][0]
BODY = {k: v for k, v in REC.items() if k != "source_record_id"}
PATH_VALUES = {"{source_record_id}": REC["source_record_id"], "{person_key}": "pk_aaaaaaaaaaaaaaaaaaaa",
               "{job_id}": "job_0000000000000000", "{principal_id}": "p_0000000000000000",
               "{dataset}": "enrolment", "{extract_id}": "x_0000000000000000",
               "{version}": LATEST_DEFAULT, "{chart}": "match-weights", "{item_id}": "1",
               "{constraint_id}": "1"}


# The body (or file, or query) of a plausible request per policy key; other routes take none.
REQUEST_KWARGS: dict[str, dict[str, Any]] = {
    "POST /v1/records": {"json": {"records": [REC]}},
    "PUT /v1/records/{source_record_id}": {"json": BODY},
    "POST /v1/match": {"json": BODY},
    "POST /v1/bulk": {"files": {"file": ("t.jsonl", (json.dumps(REC) + "\n").encode())}},
    "POST /v1/agencies": {"json": {"agency": "agency_z"}},
    "POST /v1/principals": {"json": {"name": "someone", "role": "researcher"}},
    "PUT /v1/datasets/{dataset}": {"json": {"attributes": [
        {"name": "program", "type": "string", "class": "other", "description": "Program.",
         "allowed_generalizations": ["none"]}]}},
    "POST /v1/extracts": {"json": {
        "title": "t", "purpose": "p", "agreement_ref": "a", "cohort": {"agency": A},
        "attributes": [{"agency": A, "dataset": "enrolment", "name": "program"}],
        "expires_at": "2999-01-01T00:00:00Z"}},
    "POST /v1/extracts/{extract_id}/approvals": {"json": {"decision": "approve", "reason": "ok"}},
    "POST /v1/review/{item_id}/decision": {"json": {"decision": "defer", "reason": "look again later"}},
    "POST /v1/labels": {"json": {"labels": [  # refused (422): unknown record
        {"agency_a": A, "source_record_id_a": REC["source_record_id"], "agency_b": A,
         "source_record_id_b": "no-such-record", "is_match": True}]}},
    "POST /v1/constraints/{constraint_id}/revoke": {"json": {"reason": "wrong"}},
    "POST /v1/persons/{person_key}/merge": {"json": {"person_keys": ["pk_bbbbbbbbbbbbbbbbbbbb"],
                                                      "reason": "same person"}},
    "POST /v1/persons/{person_key}/split": {"json": {
        "groups": [[{"agency": A, "source_record_id": "x"}], [{"agency": A, "source_record_id": "y"}]],
        "reason": "two people"}},
    "POST /v1/models/train": {"json": {"sample": 2}},  # refused (422) before a training thread starts
    "POST /v1/persons/{person_key}/consent": {"json": {"decision": "opt_out"}},  # 404: no such key
    "PUT /v1/principals/{principal_id}/human": {"json": {"human_email": "matrix@example.org"}},
}
QUERY = {"GET /v1/records/{source_record_id}": f"?agency={A}"}


def sample_request(key: str) -> tuple[str, str, dict[str, Any]]:
    """A plausible request for a policy key: method, url, client keyword arguments."""
    method, path = key.split(" ", 1)
    url = path
    for k, v in PATH_VALUES.items():
        url = url.replace(k, v)
    return method, url + QUERY.get(key, ""), copy.deepcopy(REQUEST_KWARGS.get(key, {}))


def test_policy_covers_exactly_the_app_routes(world: World) -> None:
    keys = route_keys(world.client.app.routes)  # type: ignore[attr-defined]
    assert sorted(set(keys)) == sorted(keys), "duplicate route"
    assert set(keys) == set(POLICY), "routes and the policy table differ"


@pytest.mark.integration
def test_role_route_matrix(world: World) -> None:
    """Every route x every role (and no key): allowed roles pass auth, others get 403."""
    for key in route_keys(world.client.app.routes):  # type: ignore[attr-defined]
        method, url, kw = sample_request(key)
        roles = POLICY[key]
        if key == "POST /console/login":  # public, but a form without its token is refused
            assert world.client.request(method, url, **kw).status_code == 403
            continue
        anon = world.client.request(method, url, **kw)
        if roles == PUBLIC:
            assert anon.status_code < 400, (key, anon.status_code)
        else:
            assert anon.status_code == 401, key
        for role in ROLE_NAMES:
            r = world.client.request(method, url, headers=world.h(role), **kw)
            if roles == PUBLIC or role in roles:
                assert r.status_code not in (401, 403) and r.status_code < 500, (key, role, r.text)
            else:
                assert r.status_code == 403, (key, role, r.status_code)
                assert r.json()["code"] == "forbidden"
    denied = [e for e in world.audit() if e["outcome"] == "denied"]
    assert denied and all(e["principal"] in world.ids.values() for e in denied)
    assert world.registry.verify_audit().ok


def test_missing_wrong_and_revoked_keys(world: World) -> None:
    url = f"/v1/records/{REC['source_record_id']}"
    r = world.client.get(url)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert world.client.get(url, headers={"Authorization": "Bearer mpi_nope"}).status_code == 401
    assert world.client.get(url, headers={"Authorization": "Basic abc"}).status_code == 401
    assert world.client.get(url, headers={"X-API-Key": world.keys[A]}).status_code == 404
    old = world.keys[A]
    r = world.client.post(f"/v1/principals/{world.ids[A]}/rotate", headers=world.h("admin"))
    assert r.status_code == 200
    new = r.json()["api_key"]
    assert new != old and new.startswith("mpi_") and len(new) >= 43
    assert world.client.get(url, headers={"X-API-Key": old}).status_code == 401
    assert world.client.get(url, headers={"X-API-Key": new}).status_code == 404
    r = world.client.post(f"/v1/principals/{world.ids[A]}/revoke", headers=world.h("admin"))
    assert r.status_code == 200 and r.json()["revoked_at"]
    assert world.client.get(url, headers={"X-API-Key": new}).status_code == 401
    uses = [e for e in world.audit() if e["action"] == "auth" and e["principal"] == world.ids[A]]
    assert uses and uses[-1]["outcome"] == "denied"
    listed = world.client.get("/v1/principals", headers=world.h("admin")).json()["principals"]
    assert not any("api_key" in p for p in listed) and new not in json.dumps(listed)


def test_last_admin_cannot_be_revoked_and_keys_are_hashed(world: World) -> None:
    admins = [p for p in world.client.get("/v1/principals", headers=world.h("admin")).json()
              ["principals"] if p["role"] == "admin"]
    r = world.client.post(f"/v1/principals/{admins[0]['principal_id']}/revoke",
                          headers=world.h("admin"))
    assert r.status_code == 409 and r.json()["code"] == "conflict"
    stored = world.registry.store.cursor().execute("SELECT key_hash FROM api_key").fetchall()
    assert all(len(h) == 64 for (h,) in stored)
    assert not any(world.keys[n] in {h for (h,) in stored} for n in ROLE_NAMES)
    assert (world.data_dir / "admin.key").stat().st_mode & 0o777 == 0o600


def test_principal_validation(world: World) -> None:
    post = world.client.post
    r = post("/v1/principals", json={"name": "x", "role": "agency"}, headers=world.h("admin"))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "agency"
    r = post("/v1/principals", json={"name": "x", "role": "agency", "agency": "nowhere"},
             headers=world.h("admin"))
    assert r.status_code == 422
    r = post("/v1/principals", json={"name": "x", "role": "auditor", "agency": A},
             headers=world.h("admin"))
    assert r.status_code == 422
    assert post("/v1/agencies", json={"agency": A}, headers=world.h("admin")).status_code == 409
    r = post("/v1/agencies", json={"agency": "bad name/"}, headers=world.h("admin"))
    assert r.status_code == 422


@pytest.mark.integration
def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    limited = create_app(Settings(data_dir=tmp_path / "x", rate_limit_per_second=0.5,
                                  rate_limit_burst=2)).state.mpi.limiter
    assert (limited.rate, limited.burst) == (0.5, 2)
    w = build_world(tmp_path)  # setting up principals needs more than 2 requests
    w.client.app.state.mpi.limiter = limited  # type: ignore[attr-defined]
    try:
        url = f"/v1/records/{REC['source_record_id']}"
        codes = [w.client.get(url, headers=w.h(A)).status_code for _ in range(3)]
        assert codes == [404, 404, 429]
        r = w.client.get(url, headers=w.h(A))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["code"] == "rate_limited"
        assert w.client.get(url, headers=w.h(B)).status_code == 404  # per principal
    finally:
        w.registry.close()


@pytest.mark.integration
def test_revoked_key_use_is_audited_within_its_own_rate_budget(tmp_path: Path) -> None:
    """Hammering with a revoked key gets 401 every time and at most a burst of audit events
    (then the rate), and does not spend the budget of the holder's current key."""
    limited = create_app(Settings(data_dir=tmp_path / "x", rate_limit_per_second=0.5,
                                  rate_limit_burst=2)).state.mpi.limiter
    w = build_world(tmp_path)
    try:
        old = w.keys[A]
        r = w.client.post(f"/v1/principals/{w.ids[A]}/rotate", headers=w.h("admin"))
        assert r.status_code == 200
        new = r.json()["api_key"]
        w.client.app.state.mpi.limiter = limited  # type: ignore[attr-defined]
        url = f"/v1/records/{REC['source_record_id']}"

        def revoked_uses() -> int:
            return sum(1 for e in w.audit() if e["action"] == "auth" and e["principal"] == w.ids[A]
                       and "revoked key" in (e["detail"] or ""))

        codes = [w.client.get(url, headers={"X-API-Key": old}).status_code for _ in range(12)]
        assert codes == [401] * 12
        assert 1 <= revoked_uses() <= 3  # the burst of 2 (plus a refill during the loop)
        assert w.client.get(url, headers={"X-API-Key": new}).status_code == 404  # not throttled
        assert w.registry.verify_audit().ok
    finally:
        w.registry.close()


# ---- agency isolation: a property over random principals, routes and targets ---------------
@pytest.fixture(scope="module")
def iso_world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    w = build_world(tmp_path_factory.mktemp("iso"))
    for agency in (A, B):
        assert w.post_records(agency, RECORDS[agency][:12]).status_code == 200
    yield w
    w.registry.close()


def _sids(agency: str) -> list[str]:
    return [r["source_record_id"] for r in RECORDS[agency][:12]]


@pytest.mark.integration
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(who=st.sampled_from([A, B, "researcher", "approver", "auditor", "steward"]),
       op=st.sampled_from(["record", "person", "match"]),
       agency=st.sampled_from([A, B]), i=st.integers(0, 11), query_agency=st.sampled_from([None, A, B]))
def test_no_principal_sees_another_agencys_source_ids(iso_world: World, who: str, op: str, agency: str,
                                                      i: int, query_agency: str | None) -> None:
    w = iso_world
    rec = RECORDS[agency][i]
    sid = rec["source_record_id"]
    if op == "record":
        q = f"?agency={query_agency}" if query_agency else ""
        r = w.client.get(f"/v1/records/{sid}{q}", headers=w.h(who))
    elif op == "person":
        key = w.registry.get_record(agency, sid)["person_key"]
        r = w.client.get(f"/v1/persons/{key}", headers=w.h(who))
    else:
        r = w.client.post("/v1/match", json={k: v for k, v in rec.items() if k != "source_record_id"},
                          headers=w.h(who))
    assert r.status_code < 500
    text = r.text
    if who in (A, B):
        other = B if who == A else A
        assert not any(s in text for s in _sids(other)), (who, op, text)
        if op == "record" and agency != who:
            assert r.status_code == 404
    elif who != "steward":
        assert r.status_code == 403
        assert "pk_" not in text and not any(s in text for s in _sids(A) + _sids(B))


def test_key_headers_and_cached_keys_follow_the_same_rules(world: World) -> None:
    """Bearer (any case, spaces around the key) wins over X-API-Key; a cached key whose role the
    route refuses is still refused and audited; a revoked cached key stops working at once."""
    url = f"/v1/records/{REC['source_record_id']}"
    key = world.keys[A]
    for headers in ({"Authorization": f"bearer  {key} "}, {"Authorization": f"Bearer {key}"},
                    {"Authorization": f"Bearer {key}", "X-API-Key": "mpi_wrong"}):
        assert world.client.get(url, headers=headers).status_code == 404, headers
    r = world.client.get(url, headers={"Authorization": "Bearer mpi_wrong", "X-API-Key": key})
    assert r.status_code == 401
    # The researcher's key is cached by its first use; the refusal still goes through the
    # audited path.
    assert world.client.get("/v1/datasets", headers=world.h("researcher")).status_code == 200
    before = len([e for e in world.audit() if e["outcome"] == "denied"])
    assert world.client.get(url, headers=world.h("researcher")).status_code == 403
    assert len([e for e in world.audit() if e["outcome"] == "denied"]) == before + 1
    r = world.client.post(f"/v1/principals/{world.ids[A]}/revoke", headers=world.h("admin"))
    assert r.status_code == 200
    assert world.client.get(url, headers={"X-API-Key": key}).status_code == 401
