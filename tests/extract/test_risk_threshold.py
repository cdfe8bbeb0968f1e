"""A maximum prosecutor risk per request that refuses (issue #16, Decision 94): default 1/k,
stricter on request, never looser; checked after the search; a request whose preview, or a
build, cannot meet it is refused naming the reason and no value."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import pytest

from mpi.errors import Conflict
from mpi.extract.protect import PolicyNotMet, protect_rows
from mpi.extract.recoding import Policy
from tests.support.api import A, World
from tests.support.extracts import RECORDS, decide, extract_flow, request_extract


def _body(w: World, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": "t", "purpose": "p", "agreement_ref": "d", "cohort": {"agency": A}, "k": 2,
        "attributes": [{"agency": A, "dataset": "enrolment", "name": "race_ethnicity"},
                       {"agency": A, "dataset": "enrolment", "name": "birth_year"}],
        "expires_at": (w.registry.clock() + dt.timedelta(days=30)).isoformat() + "Z"}
    return {**body, **over}


@pytest.mark.integration
def test_max_risk_above_1_over_k_or_on_an_aggregate_is_422(xw: World) -> None:
    for over in ({"max_risk": 0.6}, {"max_risk": 0.001}, {"max_risk": "high"},
                 {"kind": "aggregate", "dimensions": [f"{A}.race_ethnicity"], "max_risk": 0.1}):
        r = xw.client.post("/v1/extracts", json=_body(xw, **over), headers=xw.h("researcher"))
        assert r.status_code == 422, (over, r.text)
        assert "max_risk" in {p["field"] for p in r.json()["errors"]}, r.json()


@pytest.mark.integration
def test_approvers_see_whether_the_request_meets_its_maximum_risk(xw: World) -> None:
    default = request_extract(xw, k=2)["risk_report"]
    assert default["policy"] == {"max_prosecutor_risk": 0.5, "k": 2, "meets": True,
                                 "prosecutor_max": default["risk"]["prosecutor_max"]}
    stricter = request_extract(xw, k=2, max_risk=0.25)
    seen = xw.client.get(f"/v1/extracts/{stricter['extract_id']}", headers=xw.h("approver")).json()
    assert seen["max_risk"] == 0.25
    policy = seen["risk_report"]["policy"]
    assert policy["meets"] and policy["k"] == 4 and policy["prosecutor_max"] <= 0.25
    assert seen["risk_report"]["risk"]["prosecutor_max"] <= 0.25


@pytest.mark.integration
def test_a_request_that_cannot_meet_its_maximum_risk_is_refused(xw: World) -> None:
    # 80 people: classes of 100 rows (risk 0.01) would need every row suppressed
    r = xw.client.post("/v1/extracts", json=_body(xw, max_risk=0.01), headers=xw.h("researcher"))
    assert r.status_code == 422, r.text
    assert [p["field"] for p in r.json()["errors"]] == ["max_risk"], r.json()
    problem = r.json()["errors"][0]
    assert "cannot meet its disclosure policy" in problem["reason"], problem
    assert "suppressed" in problem["reason"]
    for rows in RECORDS.values():   # no value of any record is in the refusal
        for rec in rows:
            assert rec["source_record_id"] not in r.text
    assert xw.client.get("/v1/extracts", headers=xw.h("researcher")).json()["extracts"] == []


@pytest.mark.integration
def test_a_build_that_can_no_longer_meet_it_is_refused(xw: World) -> None:
    x = request_extract(xw, k=2)
    assert x["risk_report"]["policy"]["meets"]
    for rec in RECORDS[A][1:]:   # the cohort shrinks to one person before the build
        r = xw.client.delete(f"/v1/records/{rec['source_record_id']}", headers=xw.h(A))
        assert r.status_code in (200, 204), r.text
    for who in ("approver", "approver_b", "steward"):
        decide(xw, who, x["extract_id"])
    extract_flow(xw).wait(60)
    out = xw.client.get(f"/v1/extracts/{x['extract_id']}", headers=xw.h("researcher")).json()
    assert out["build_state"] == "failed", out
    assert "cannot meet its disclosure policy" in out["build_error"]
    assert xw.client.get(f"/v1/extracts/{x['extract_id']}/download",
                         headers=xw.h("researcher")).status_code == 409


class _Attr:
    agency, name, type, klass, generalization = "a", "colour", "string", "other", "none"
    non_identifying_signed_off_by = None
    hierarchy = None


def test_the_gate_refuses_what_the_search_cannot_bring_under_the_threshold() -> None:
    table = pa.table({"person_id": [f"p{i}" for i in range(6)], "agency": ["a"] * 6,
                      "a.colour": ["red", "red", "red", "blue", "blue", "blue"],
                      "link_match_probability": [0.99] * 6})
    ok = protect_rows(table, {"a.colour": _Attr()}, ["a.colour"], cohort_agency="a",
                      policy=Policy(k=3, l=1), risk_threshold=1 / 3)
    assert ok.report["policy"]["meets"] and ok.report["policy"]["prosecutor_max"] <= 1 / 3
    with pytest.raises(PolicyNotMet) as err:   # classes of 10 cannot be made from 6 rows
        protect_rows(table, {"a.colour": _Attr()}, ["a.colour"], cohort_agency="a",
                     policy=Policy(k=3, l=1), risk_threshold=0.1)
    assert isinstance(err.value, Conflict) and "red" not in err.value.message
    assert "all 6 rows would have to be suppressed" in err.value.message
