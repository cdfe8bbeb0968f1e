"""A non-identifying sign-off is a steward's own action, never a field the agency writes
(issue #16, Decision 94), through the real API."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.api import A, World
from tests.support.extracts import DICTIONARY, approve_all, audit_events, request_extract, zip_member

pytestmark = pytest.mark.integration

OTHER_PROGRAM = [{**e, "class": "other"} if e["name"] == "program" else e for e in DICTIONARY]
ZIP = {"name": "postal_code", "type": "string", "class": "quasi_identifier",
       "description": "ZIP code.", "allowed_generalizations": ["zip3", "suppress"],
       "default_generalization": "zip3"}
URL = "/v1/datasets/{agency}/enrolment/attributes/{name}/sign-off"


def _put(w: World, attributes: list[dict[str, Any]]) -> Any:
    return w.client.put("/v1/datasets/enrolment", headers=w.h(A), json={"attributes": attributes})


def _sign(w: World, name: str, who: str = "steward", *, revoke: bool = False) -> Any:
    url = URL.format(agency=A, name=name) + ("/revoke" if revoke else "")
    return w.client.post(url, headers=w.h(who), json={"reason": "a coarse program code"})


def _entry(w: World, name: str) -> dict[str, Any]:
    cat = w.client.get("/v1/datasets", headers=w.h("researcher")).json()["datasets"]
    ds = next(d for d in cat if d["agency"] == A and d["dataset"] == "enrolment")
    return dict(next(e for e in ds["attributes"] if e["name"] == name))


def _program_is_a_quasi_identifier(w: World) -> bool:
    risk = request_extract(w, k=2, l=1)["risk_report"]
    assert risk and "error" not in risk, risk
    return f"{A}.program" in risk["quasi_identifiers"]


def test_an_agency_cannot_sign_off_its_own_zip_or_program_column(xw: World) -> None:
    """The attack: the agency writes a sign-off naming a real steward for its own ZIP and
    program columns. Neither is honoured: the PUT is refused naming the field, and program
    stays a quasi-identifier of every rows extract."""
    for name in ("postal_code", "program"):
        attrs = [*OTHER_PROGRAM, ZIP]
        attrs = [{**e, "non_identifying_signed_off_by": xw.ids["steward"]} if e["name"] == name
                 else e for e in attrs]
        r = _put(xw, attrs)
        assert r.status_code == 422, r.text
        assert [p["field"] for p in r.json()["errors"]] == ["non_identifying_signed_off_by"]
    assert _put(xw, [*OTHER_PROGRAM, ZIP]).status_code == 200
    assert _entry(xw, "program")["non_identifying_signed_off_by"] is None
    assert _program_is_a_quasi_identifier(xw)
    # and the agency has no way to the steward's route either
    assert _sign(xw, "program", who=A).status_code == 403
    assert _sign(xw, "program", who="researcher").status_code == 403


def test_a_steward_signs_off_and_revokes_audited(xw: World) -> None:
    assert _put(xw, OTHER_PROGRAM).status_code == 200
    r = _sign(xw, "program")
    assert r.status_code == 200, r.text
    assert r.json()["non_identifying_signed_off_by"] == xw.ids["steward"]
    assert r.json()["non_identifying_sign_off_reason"] == "a coarse program code"
    assert not _program_is_a_quasi_identifier(xw)
    risk = request_extract(xw, k=2, l=1)["risk_report"]
    assert f"{A}.program" in risk["signed_off_non_identifying"]
    ok = [e for e in audit_events(xw, "datasets.sign_off") if e["outcome"] == "ok"]
    assert [e["principal"] for e in ok] == [xw.ids["steward"]]
    assert "example.org" not in str(ok)   # the human's address is never in an audit event
    r = _sign(xw, "program", revoke=True)
    assert r.status_code == 200 and r.json()["non_identifying_signed_off_by"] is None
    assert _program_is_a_quasi_identifier(xw)
    assert _sign(xw, "program", revoke=True).status_code == 404
    assert len(audit_events(xw, "datasets.sign_off_revoke")) == 2


@pytest.mark.parametrize(("name", "klass"), [
    ("enrolled_on", "other"),       # a date
    ("postal_code", "other"),       # a ZIP (class other with zip3 only is a valid dictionary)
    ("birth_year", "other"),        # a birth field
    ("race_ethnicity", "quasi_identifier"),
    ("program", "sensitive"),
])
def test_identifying_fields_and_other_classes_are_refused(xw: World, name: str, klass: str) -> None:
    attrs = [{**e, "class": klass} if e["name"] == name else e
             for e in [*OTHER_PROGRAM, ZIP] if e["name"] != "program" or name != "program"]
    if name == "program":
        attrs.append(next(e for e in DICTIONARY if e["name"] == "program"))
    if name == "birth_year":   # year is the only release of a birth field as other
        attrs = [{**e, "allowed_generalizations": ["year", "suppress"]} if e["name"] == name
                 else e for e in attrs]
    assert _put(xw, attrs).status_code == 200, _put(xw, attrs).text
    r = _sign(xw, name)
    assert r.status_code == 422, r.text
    assert [p["field"] for p in r.json()["errors"]] == ["attribute"]
    assert _entry(xw, name)["non_identifying_signed_off_by"] is None
    assert [e["outcome"] for e in audit_events(xw, "datasets.sign_off")] == ["invalid"]


def test_unknown_attribute_is_404_and_a_reason_is_required(xw: World) -> None:
    assert _sign(xw, "nothing_here").status_code == 404
    r = xw.client.post(URL.format(agency=A, name="program"), headers=xw.h("steward"),
                       json={"reason": ""})
    assert r.status_code == 422 and "reason" in r.text


def test_a_re_put_keeps_the_sign_off_unless_type_or_class_changes(xw: World) -> None:
    assert _put(xw, OTHER_PROGRAM).status_code == 200
    assert _sign(xw, "program").status_code == 200
    assert _put(xw, OTHER_PROGRAM).status_code == 200       # routine re-PUT: kept
    assert _entry(xw, "program")["non_identifying_signed_off_by"] == xw.ids["steward"]
    assert _put(xw, DICTIONARY).status_code == 200          # class changed: dropped
    assert _entry(xw, "program")["non_identifying_signed_off_by"] is None
    assert _put(xw, OTHER_PROGRAM).status_code == 200       # changing back does not revive it
    assert _entry(xw, "program")["non_identifying_signed_off_by"] is None
    details = [json.loads(e["detail"]) for e in audit_events(xw, "datasets.put") if e["detail"]]
    assert [d["sign_offs_dropped"] for d in details if d.get("sign_offs_dropped")] == [["program"]]


def _built_quasi_identifiers(w: World, extract_id: str) -> list[str]:
    approve_all(w, extract_id)
    pkg = w.client.get(f"/v1/extracts/{extract_id}/download", headers=w.h("researcher"))
    return list(json.loads(zip_member(pkg.content, "disclosure_report.json"))
                ["k_anonymity"]["quasi_identifiers"])


def test_a_build_honours_only_a_sign_off_approvers_saw_that_still_stands(xw: World) -> None:
    assert _put(xw, OTHER_PROGRAM).status_code == 200
    assert _sign(xw, "program").status_code == 200
    seen = request_extract(xw, k=2, l=1)    # approvers see program signed off...
    assert f"{A}.program" in seen["risk_report"]["signed_off_non_identifying"]
    assert _sign(xw, "program", revoke=True).status_code == 200   # ...then it is revoked
    assert f"{A}.program" in _built_quasi_identifiers(xw, seen["extract_id"])
    later = request_extract(xw, k=2, l=1)   # made without a sign-off...
    assert _sign(xw, "program").status_code == 200   # ...signed off after the request
    assert f"{A}.program" in _built_quasi_identifiers(xw, later["extract_id"])
    honoured = request_extract(xw, k=2, l=1)   # seen and still standing: honoured
    assert f"{A}.program" not in _built_quasi_identifiers(xw, honoured["extract_id"])
