"""The accounting of disclosures never tells an agency about another agency's clients.

Owns: the attacker's test for issue 16's finding 5: agency A, asking
``GET /v1/persons/{key}/disclosures`` for a person it holds, saw projects that released only
another agency's data about that person (a foster-care project of agency C listed for 884 of
1,500 people, all truly C's clients). An agency must see only disclosures that released its own
data about the person (its attributes, or its cohort); the steward sees all.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.api import A, B, World
from tests.support.extracts import approve_all, request_extract

pytestmark = pytest.mark.integration


def _download(w: World, xid: str) -> None:
    r = w.client.get(f"/v1/extracts/{xid}/download", headers=w.h("researcher"))
    assert r.status_code == 200, r.text


def _listed(w: World, key: str, who: str) -> dict[str, Any]:
    r = w.client.get(f"/v1/persons/{key}/disclosures", headers=w.h(who))
    assert r.status_code == 200, r.text
    return {d["extract_id"]: d for d in r.json()["disclosures"]}


def test_an_agency_never_sees_projects_that_released_only_another_agencys_data(
        xw: World) -> None:
    only_b = request_extract(xw, title="Foster care outcomes", cohort={"agency": B},
                             attributes=[{"agency": B, "dataset": "enrolment",
                                          "name": "program"}])["extract_id"]
    approve_all(xw, only_b)
    _download(xw, only_b)
    keys = xw.registry.export_keys().to_pylist()
    held_by = {}
    for row in keys:
        held_by.setdefault(str(row["person_key"]), set()).add(row["agency"])
    shared = sorted(k for k, agencies in held_by.items() if agencies == {A, B})
    disclosed = [k for k in shared if only_b in _listed(xw, k, "steward")]
    assert disclosed, "the B-only extract disclosed none of the persons both agencies hold"
    for key in disclosed:
        assert only_b in _listed(xw, key, B)          # B's data was released: B sees it
        assert only_b not in _listed(xw, key, A), (   # A's was not: A must not learn of it
            "agency A learnt that another agency's project released data about its client")


def test_an_agency_sees_only_its_own_released_attributes(xw: World) -> None:
    """A project over A's cohort releasing A's and B's data: each agency sees the project (its
    data was released) but only its own attributes in the accounting; the steward sees all."""
    both = request_extract(xw, cohort={"agency": A}, attributes=[
        {"agency": A, "dataset": "enrolment", "name": "program"},
        {"agency": B, "dataset": "enrolment", "name": "program"}])["extract_id"]
    approve_all(xw, both)
    _download(xw, both)
    keys = xw.registry.export_keys().to_pylist()
    held_by: dict[str, set[str]] = {}
    for row in keys:
        held_by.setdefault(str(row["person_key"]), set()).add(row["agency"])
    key = next(k for k in sorted(held_by) if held_by[k] == {A, B}
               and both in _listed(xw, k, "steward"))
    steward = _listed(xw, key, "steward")[both]
    assert {a["agency"] for a in steward["attributes"]} == {A, B}
    for agency in (A, B):
        mine = _listed(xw, key, agency)[both]
        assert {a["agency"] for a in mine["attributes"]} == {agency}
