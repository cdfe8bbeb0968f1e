"""Consent that sticks (issue 16, finding 8; Decision 79), attacker tests first.

- An agency records a person-level opt-out for a person it holds; it answers 404 exactly as
  for an unknown key for anyone else's person, so the route never reveals another agency's
  holdings.
- The opt-out survives a refresh of the person's records without (or even with) a
  ``research_consent`` field, and excludes the person from the next extract build.
- An agency cannot lift another agency's opt-out; an opt-in needs a reason; a steward lifts a
  scope explicitly, with provenance.
- A delivered package that includes a person who opts out later is flagged on its extract
  (counts only) and its next download is refused (409 ``rebuild_required``) until rebuilt.
- The opt-out follows the person through a merge and into both parts of a split.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from mpi.store.consent import OPTED_OUT_CTES
from tests.support.api import A, B, World
from tests.support.extracts import RECORDS, approve_all, audit_events, extract_flow, request_extract

pytestmark = pytest.mark.integration  # builds extracts in the background (~1-3 s each)


def _holders(w: World) -> dict[str, set[str]]:
    """person key -> agencies holding an active record of it."""
    t = w.registry.export_keys().to_pylist()
    out: dict[str, set[str]] = {}
    for r in t:
        out.setdefault(r["person_key"], set()).add(r["agency"])
    return out


def _persons(w: World, held_by: set[str]) -> list[str]:
    return sorted(k for k, a in _holders(w).items() if a == held_by)


def _consent(w: World, who: str, key: str, **body: Any) -> Any:
    return w.client.post(f"/v1/persons/{key}/consent", headers=w.h(who), json=body)


def _steward_view(w: World, key: str) -> dict[str, Any]:
    r = w.client.get(f"/v1/persons/{key}/consent", headers=w.h("steward"))
    assert r.status_code == 200, r.text
    return dict(r.json())


def _included(w: World, xid: str) -> set[str]:
    """The person keys the latest build of an extract included (test-side reader)."""
    cur = w.registry.store.cursor()
    return {str(r[0]) for r in cur.execute(
        "SELECT person_key FROM extract_person WHERE extract_id = ? AND build_seq = "
        "(SELECT max(build_seq) FROM extract_build WHERE extract_id = ?)", [xid, xid]).fetchall()}


def test_agency_answers_404_identically_for_persons_it_does_not_hold(xw: World) -> None:
    b_only = _persons(xw, {B})[0]
    unknown = "pk_" + "a" * 20
    for method in ("get", "post"):
        kw = {"json": {"decision": "opt_out"}} if method == "post" else {}
        theirs = getattr(xw.client, method)(f"/v1/persons/{b_only}/consent", headers=xw.h(A), **kw)
        nobody = getattr(xw.client, method)(f"/v1/persons/{unknown}/consent", headers=xw.h(A), **kw)
        assert theirs.status_code == nobody.status_code == 404
        assert theirs.json() == nobody.json()
    assert _steward_view(xw, b_only)["entries"] == []  # nothing was recorded
    refused = [e for e in audit_events(xw, "persons.consent") if e["outcome"] == "not_found"]
    assert len(refused) == 2
    # other roles are refused by the policy table
    assert xw.client.get(f"/v1/persons/{b_only}/consent",
                         headers=xw.h("researcher")).status_code == 403


def test_opt_out_sticks_through_refreshes_and_excludes_the_person(xw: World) -> None:
    both = _persons(xw, {A, B})
    target = both[0]
    r = _consent(xw, A, target, decision="opt_out", reason="letter of 2026-11-30",
                 date="2026-11-30")
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["scopes"] == [{"source_agency": A, "consent": "opt_out"}]
    assert out["excluded_from_research"] is None  # an agency is not told the combined state
    e = out["entries"][0]
    assert (e["decision"], e["source_agency"], e["date"], e["recorded_by"]) == (
        "opt_out", A, "2026-11-30", xw.ids[A])
    # routine refreshes of every record of the person at both agencies: without the field,
    # and even with an explicit record-level true: the person-level opt-out stands
    for agency in (A, B):
        for rec in RECORDS[agency]:
            sid = rec["source_record_id"]
            got = xw.client.get(f"/v1/records/{sid}", headers=xw.h(agency)).json()
            if got["person_key"] != target:
                continue
            base = {k: v for k, v in rec.items() if k != "research_consent"}
            for body in (base, {**base, "research_consent": True}):
                assert xw.client.put(f"/v1/records/{sid}", headers=xw.h(agency),
                                     json=body).status_code == 200
    view = _steward_view(xw, target)
    assert view["excluded_from_research"] is True and view["record_level_opt_out"] is False
    xid = request_extract(xw)["extract_id"]
    approve_all(xw, xid)
    included = _included(xw, xid)
    assert included and target not in included
    events = audit_events(xw, "persons.consent")
    assert events[-1]["outcome"] == "ok" and target not in json.dumps(events, default=str)


def test_an_agency_cannot_lift_another_agencys_opt_out(xw: World) -> None:
    target = _persons(xw, {A, B})[0]
    assert _consent(xw, B, target, decision="opt_out").status_code == 201
    # an opt-in needs its own provenance
    r = _consent(xw, A, target, decision="opt_in")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "reason"
    # an agency records only in its own name
    r = _consent(xw, A, target, decision="opt_in", reason="x", source_agency=B)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "source_agency"
    r = _consent(xw, A, target, decision="opt_in", reason="consent form signed")
    assert r.status_code == 201
    assert r.json()["scopes"] == [{"source_agency": A, "consent": "opt_in"}]  # never B's entry
    assert B not in json.dumps(r.json())
    view = _steward_view(xw, target)
    assert view["excluded_from_research"] is True  # B's opt-out stands
    assert {(s["source_agency"], s["consent"]) for s in view["scopes"]} == {
        (B, "opt_out"), (A, "opt_in")}
    # the steward lifts B's scope explicitly, with a reason and its own name on it
    r = _consent(xw, "steward", target, decision="opt_in", source_agency=B,
                 reason="person's written request of 2026-12-01, ticket 42")
    assert r.status_code == 201 and r.json()["excluded_from_research"] is False
    assert r.json()["entries"][-1]["recorded_by"] == xw.ids["steward"]
    lifted = [json.loads(e["detail"]) for e in audit_events(xw, "persons.consent")
              if e["outcome"] == "ok"]
    assert [d["lifts_opt_out"] for d in lifted] == [False, False, True]
    # a steward's own scope, and bad input names its field
    r = _consent(xw, "steward", target, decision="maybe")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "decision"
    r = _consent(xw, "steward", target, decision="opt_out", date="2999-01-01")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "date"
    r = _consent(xw, "steward", target, decision="opt_out", source_agency="nowhere")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "source_agency"


def test_delivered_package_is_flagged_and_refused_until_rebuilt(xw: World) -> None:
    xid = request_extract(xw)["extract_id"]
    approve_all(xw, xid)
    url = f"/v1/extracts/{xid}/download"
    assert xw.client.get(url, headers=xw.h("researcher")).status_code == 200
    fresh = xw.client.get(f"/v1/extracts/{xid}", headers=xw.h("researcher")).json()["recall"]
    assert fresh == {"flagged": False, "rebuild_required": False, "builds": []}
    target = sorted(_included(xw, xid))[0]
    who = A if A in _holders(xw)[target] else B
    assert _consent(xw, who, target, decision="opt_out").status_code == 201
    for viewer in ("researcher", "approver", "approver_b", "steward"):
        recall = xw.client.get(f"/v1/extracts/{xid}", headers=xw.h(viewer)).json()["recall"]
        assert recall["flagged"] and recall["rebuild_required"], viewer
        assert [(b["build_seq"], b["opted_out_persons"]) for b in recall["builds"]] == [(1, 1)]
        assert target not in json.dumps(recall)
    r = xw.client.get(url, headers=xw.h("researcher"))
    assert r.status_code == 409 and r.json()["code"] == "rebuild_required"
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "rebuild required" in r.json()["detail"]
    recalls = audit_events(xw, "extracts.recall")
    assert [e["target"] for e in recalls] == [f"extract:{xid}"]
    # rebuilt without the person: delivered again; build 1 stays flagged for destruction
    assert xw.client.post(f"/v1/extracts/{xid}/build",
                          headers=xw.h("researcher")).status_code == 202
    extract_flow(xw).wait(60)
    assert target not in _included(xw, xid)
    assert xw.client.get(url, headers=xw.h("researcher")).status_code == 200
    recall = xw.client.get(f"/v1/extracts/{xid}", headers=xw.h("researcher")).json()["recall"]
    assert recall["flagged"] and not recall["rebuild_required"]
    assert [b["build_seq"] for b in recall["builds"]] == [1]


def test_opt_out_follows_the_person_through_merge_and_split(xw: World) -> None:
    a_only = _persons(xw, {A})
    older, newer = a_only[0], a_only[1]
    assert _consent(xw, A, newer, decision="opt_out").status_code == 201
    r = xw.client.post(f"/v1/persons/{older}/merge", headers=xw.h("steward"),
                       json={"person_keys": [newer], "reason": "same person"})
    assert r.status_code == 200, r.text
    survivor = r.json()["person_key"]
    retired = newer if survivor == older else older
    assert _steward_view(xw, survivor)["excluded_from_research"] is True
    assert xw.client.get(f"/v1/persons/{retired}/consent",
                         headers=xw.h("steward")).status_code == 409
    # the agency lifts its own opt-out on the survivor: lifted there
    assert _consent(xw, A, survivor, decision="opt_in", reason="re-consented").status_code == 201
    assert _steward_view(xw, survivor)["excluded_from_research"] is False
    # a split: both parts keep an opt-out recorded before it
    both = _persons(xw, {A, B})[0]
    assert _consent(xw, "steward", both, decision="opt_out").status_code == 201
    records = xw.client.get(f"/v1/persons/{both}", headers=xw.h("steward")).json()["records"]
    groups = [[r for r in records if r["agency"] == A], [r for r in records if r["agency"] == B]]
    r = xw.client.post(f"/v1/persons/{both}/split", headers=xw.h("steward"),
                       json={"groups": groups, "reason": "two people"})
    assert r.status_code == 200, r.text
    parts = r.json()["person_keys"]
    assert len(parts) == 2
    for key in parts:
        assert _steward_view(xw, key)["excluded_from_research"] is True
    excluded = xw.registry.store.cursor().execute(
        f"WITH RECURSIVE {OPTED_OUT_CTES} SELECT person_key FROM person_opted_out").fetchall()
    assert {k for (k,) in excluded} >= set(parts)
