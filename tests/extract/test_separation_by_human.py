"""Separation of duties by human, not by principal name (issue 16, finding 6; Decision 80).

The attack: one human holds two principals with different names and approves one request as an
agency approver and as the steward. Before Decision 80 both approvals were accepted (the only
check compared principal names). Now a principal carries ``human_email``; admin cannot give one
human a second active principal, and one human never acts in two capacities on a request, even
through a principal revoked since.
"""

from __future__ import annotations

import json
from typing import Any

from mpi.principals import Principals
from tests.support.api import A, World
from tests.support.extracts import add_principal, audit_events, decide, request_extract


def _create(w: World, name: str, role: str, agency: str | None = None,
            human_email: str | None = None) -> Any:
    return w.client.post("/v1/principals", headers=w.h("admin"), json={
        "name": name, "role": role, "agency": agency, "human_email": human_email})


def _revoke(w: World, who: str) -> None:
    r = w.client.post(f"/v1/principals/{w.ids[who]}/revoke", headers=w.h("admin"))
    assert r.status_code == 200, r.text


def _keep(w: World, name: str, r: Any) -> None:
    assert r.status_code == 201, r.text
    w.keys[name], w.ids[name] = r.json()["api_key"], r.json()["principal"]["principal_id"]


def test_one_human_cannot_approve_one_request_twice(xw: World) -> None:
    xid = request_extract(xw)["extract_id"]
    # the approver of agency A is alice; she approves
    assert decide(xw, "approver", xid).status_code == 200  # approver@example.org
    # admin cannot give alice's address to a second principal (case and +tag do not help)
    for variant in ("approver@example.org", "Approver+steward@EXAMPLE.org"):
        r = _create(xw, "Second Hat", "steward", human_email=variant)
        assert r.status_code == 409 and r.json()["code"] == "conflict", r.text
    # ... unless her approver principal is revoked first: then she may hold a steward key,
    # but still not approve the request she has already approved
    _revoke(xw, "approver")
    _keep(xw, "second_hat", _create(xw, "Second Hat", "steward", human_email="approver@example.org"))
    r = decide(xw, "second_hat", xid)
    assert r.status_code == 403 and "one capacity" in r.json()["detail"]
    out = xw.client.get(f"/v1/extracts/{xid}", headers=xw.h("steward")).json()
    assert "steward" in out["pending_approvals"]
    refused = [e for e in audit_events(xw, "extracts.approve") if e["outcome"] == "denied"]
    assert refused[-1]["principal"] == xw.ids["second_hat"]
    assert "example.org" not in json.dumps(audit_events(xw, "extracts.approve"), default=str)


def test_the_requesters_human_never_approves(xw: World) -> None:
    xid = request_extract(xw)["extract_id"]  # researcher@example.org
    _revoke(xw, "researcher")
    _keep(xw, "turncoat", _create(xw, "Someone Else", "steward",
                                  human_email="Researcher@example.org"))
    r = decide(xw, "turncoat", xid)
    assert r.status_code == 403 and "same person" in r.json()["detail"]


def test_principals_without_a_human_cannot_approve_until_admin_sets_one(xw: World) -> None:
    # a principal created before Decision 80: written as the old code did, without a human
    xid = request_extract(xw)["extract_id"]
    row, key = Principals(xw.registry).create_principal("legacy", role="approver", agency=A,
                                                        actor="test", require_human=False)
    assert row["human_email"] is None
    xw.keys["legacy"], xw.ids["legacy"] = key, row["principal_id"]
    # it keeps working (reads), but may not decide
    assert xw.client.get(f"/v1/extracts/{xid}", headers=xw.h("legacy")).status_code == 200
    r = decide(xw, "legacy", xid)
    assert r.status_code == 403 and "human_email" in r.json()["detail"]
    # admin sets the human once; a second time is 409; a taken address is 409 too
    url = f"/v1/principals/{row['principal_id']}/human"
    r = xw.client.put(url, headers=xw.h("admin"), json={"human_email": "steward@example.org"})
    assert r.status_code == 409  # the steward principal is that human
    r = xw.client.put(url, headers=xw.h("admin"), json={"human_email": "not an address"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "human_email"
    r = xw.client.put(url, headers=xw.h("admin"), json={"human_email": "Legacy@Example.org"})
    assert r.status_code == 200 and r.json()["human_email"] == "legacy@example.org"
    assert xw.client.put(url, headers=xw.h("admin"),
                         json={"human_email": "other@example.org"}).status_code == 409
    assert decide(xw, "legacy", xid).status_code == 200
    assert [e["outcome"] for e in audit_events(xw, "principals.human")] == [
        "invalid", "invalid", "ok", "invalid"]


def test_human_email_is_required_for_people_and_refused_for_systems(xw: World) -> None:
    r = _create(xw, "No Email", "researcher")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "human_email"
    r = _create(xw, "System", "agency", agency=A, human_email="ops@example.org")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "human_email"
    r = _create(xw, "Bad", "auditor", human_email="@example")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "human_email"
    add_principal(xw, "Dana", "auditor", human_email="dana@example.org")
    listed = xw.client.get("/v1/principals", headers=xw.h("admin")).json()["principals"]
    assert {p["name"]: p["human_email"] for p in listed}["Dana"] == "dana@example.org"
