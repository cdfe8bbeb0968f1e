"""The risk report approvers see before they decide, and the dictionary guardrails, through the
real API (issue #16, Decisions 74-76)."""

from __future__ import annotations

import json

import pytest

from tests.support.api import A, World
from tests.support.extracts import DICTIONARY, approve_all, package_data, request_extract, zip_member


@pytest.mark.integration
def test_the_risk_report_is_on_the_request_before_approval_and_the_build_meets_it(xw: World) -> None:
    x = request_extract(xw, k=2, l=2)
    seen = xw.client.get(f"/v1/extracts/{x['extract_id']}", headers=xw.h("approver")).json()
    assert seen["status"] == "pending"
    risk = seen["risk_report"]
    assert risk and "error" not in risk, risk
    assert risk["quasi_identifiers"][0] == "agency" and "link_match_probability" in risk["quasi_identifiers"]
    assert f"{A}.program" in risk["quasi_identifiers"] and f"{A}.program" in risk["sensitive"]
    assert risk["risk"]["prosecutor_max"] <= 0.5 and risk["risk"]["sample_uniques"] == 0
    assert {"risk_before", "utility", "l_diversity", "generalization_levels", "suppression"} <= set(risk)
    assert seen["l"] == 2 and seen["max_suppression"] == 0.05
    # no secret or package exists before approval; the build reports the same kind of figures
    approve_all(xw, x["extract_id"])
    pkg = xw.client.get(f"/v1/extracts/{x['extract_id']}/download", headers=xw.h("researcher"))
    assert pkg.status_code == 200
    report = json.loads(zip_member(pkg.content, "disclosure_report.json"))["k_anonymity"]
    assert report["risk"]["prosecutor_max"] <= 0.5
    assert package_data(pkg.content).num_rows == report["records_out"]


def test_bad_l_and_suppression_budget_are_422(xw: World) -> None:
    body = {"title": "t", "purpose": "p", "agreement_ref": "d", "cohort": {"agency": A},
            "attributes": [{"agency": A, "dataset": "enrolment", "name": "program"}],
            "expires_at": "2099-01-01T00:00:00Z", "l": 0, "max_suppression": 0.9}
    r = xw.client.post("/v1/extracts", json=body, headers=xw.h("researcher"))
    assert r.status_code == 422
    fields = {p["field"] for p in r.json()["errors"]}
    assert {"l", "max_suppression"} <= fields, r.json()


def test_a_dictionary_with_an_identifying_field_as_other_is_refused_naming_it(xw: World) -> None:
    bad = [*DICTIONARY, {"name": "postal_code", "type": "string", "class": "other",
                         "description": "ZIP", "allowed_generalizations": ["none", "zip3"],
                         "default_generalization": "zip3"}]
    r = xw.client.put("/v1/datasets/enrolment", headers=xw.h(A), json={"attributes": bad})
    assert r.status_code == 422 and "postal_code" in r.text
    # the agency cannot write a sign-off, even naming a real steward (Decision 94; see
    # tests/extract/test_steward_sign_off.py for the steward's own action)
    signed = [*DICTIONARY, {"name": "household", "type": "string", "class": "other",
                            "description": "Household type", "allowed_generalizations": ["none"],
                            "non_identifying_signed_off_by": xw.ids["steward"]}]
    r = xw.client.put("/v1/datasets/enrolment", headers=xw.h(A), json={"attributes": signed})
    assert r.status_code == 422 and "non_identifying_signed_off_by" in r.text
