"""Attackers over everything one researcher holds (issue 16, Decisions 77 and 78).

1. An integer-program attacker over every aggregate table released to one researcher (race x
   program x sex, race x program, race x sex, and one-way tables, through the real workflow):
   for every suppressed count it computes its whole-number min and max from the published
   cells, margins and totals of all tables, knowing that they count the same cohort. The attack
   succeeds on a count when min == max (recovered) or max - min < the protection width.
2. A differencing attacker over successive rows releases: two cohorts ending one month apart
   (other projects: rows matched by content) and a rebuild after an opt-out (same project:
   pseudonyms). It succeeds when the persons in one release and not the other are 1..k-1.

The attackers are written from the published files only, independently of mpi/extract.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from scipy.optimize import Bounds, LinearConstraint, milp

from mpi.extract import delivery
from mpi.extract.linked_tables import PROTECTION_WIDTH
from mpi.extract.pseudonym import pseudonymize
from mpi.identity.pipeline import tokenize_rows
from mpi.synth import generate
from tests.support.api import A, B, World, build_world, close_world
from tests.support.extracts import (
    add_principal,
    approve_all,
    extract_flow,
    package_data,
    pseudonyms,
    zip_member,
)
from tests.support.records import SECRET, Records

pytestmark = pytest.mark.integration

ATTRS = ("race_ethnicity", "sex", "program", "birth_year", "enrolled_on")
PEOPLE = 600
DICTIONARY = [
    {"name": "race_ethnicity", "type": "string", "class": "quasi_identifier",
     "description": "Race/ethnicity.", "allowed_generalizations": ["none", "suppress"]},
    {"name": "sex", "type": "string", "class": "quasi_identifier", "description": "Sex.",
     "allowed_generalizations": ["none", "suppress"]},
    {"name": "program", "type": "string", "class": "sensitive", "description": "Program code.",
     "allowed_generalizations": ["none"]},
    {"name": "birth_year", "type": "integer", "class": "quasi_identifier",
     "description": "Year of birth.", "allowed_generalizations": ["year", "none", "suppress"],
     "default_generalization": "year"},
    {"name": "enrolled_on", "type": "date", "class": "other", "description": "Enrolment date.",
     "allowed_generalizations": ["month", "year", "suppress"]},
]


@functools.cache
def records() -> Records:
    """Token records whose race, sex, program and birth year are one value per true person (as
    a person-level register would hold them), so the attacker's equal sums are all true."""
    rows, truth = generate(people=PEOPLE, agencies=2, seed=41)
    person = {(a, sid): pid for a, sid, pid in truth}
    canonical: dict[tuple[str, str], str] = {}
    for agency, agency_rows in rows.items():
        for row in agency_rows:
            for name in ATTRS[:4]:
                if row[name]:
                    canonical.setdefault((person[(agency, row["source_record_id"])], name),
                                         row[name])
    for agency, agency_rows in rows.items():
        for row in agency_rows:
            for name in ATTRS[:4]:
                row[name] = canonical.get((person[(agency, row["source_record_id"])], name), "")
    return {a: tokenize_rows(r, secret=SECRET, attributes=ATTRS)[0] for a, r in rows.items()}


@pytest.fixture
def lw(tmp_path: Path) -> Iterator[World]:
    w = build_world(tmp_path)
    for agency in (A, B):
        assert w.post_records(agency, records()[agency]).status_code == 200
        r = w.client.put("/v1/datasets/enrolment", headers=w.h(agency),
                         json={"description": "Program enrolment", "attributes": DICTIONARY})
        assert r.status_code == 200, r.text
    _one_value_per_person(w)
    add_principal(w, "approver_b", "approver", B)
    yield w
    extract_flow(w).wait(60)
    close_world(w)


def _one_value_per_person(w: World) -> None:
    """Where linkage put two true persons together, refresh the records so the registry person
    still has one race, sex, program and birth year (every sum the attacker assumes is true)."""
    by_person: dict[str, list[dict[str, Any]]] = {}
    for rec in records()[A]:
        by_person.setdefault(w.registry.get_record(A, rec["source_record_id"])["person_key"],
                             []).append(rec)
    for recs in by_person.values():
        first = {n: v for n, v in recs[0]["attributes"].items() if n in ATTRS[:4]}
        for rec in recs[1:]:
            attrs = {**first, **{n: v for n, v in rec["attributes"].items() if n not in first
                                 and n not in ATTRS[:4]}}
            if attrs == rec["attributes"]:
                continue
            body = {x: v for x, v in {**rec, "attributes": attrs}.items() if x != "source_record_id"}
            r = w.client.put(f"/v1/records/{rec['source_record_id']}", json=body, headers=w.h(A))
            assert r.status_code == 200, r.text


def _attr(name: str, agency: str = A) -> dict[str, str]:
    return {"agency": agency, "dataset": "enrolment", "name": name}


def _request(w: World, **over: Any) -> str:
    body: dict[str, Any] = {
        "title": "Linked tables", "purpose": "Program evaluation", "agreement_ref": "DUA-16",
        "cohort": {"agency": A}, "k": 5,
        "expires_at": (w.registry.clock() + dt.timedelta(days=30)).isoformat() + "Z",
        "download_limit": 5}
    body.update(over)
    r = w.client.post("/v1/extracts", json=body, headers=w.h("researcher"))
    assert r.status_code == 201, r.text
    return str(r.json()["extract_id"])


def _release(w: World, **over: Any) -> tuple[str, bytes]:
    """Request, approve (the build runs), download: the package as the researcher holds it."""
    xid = _request(w, **over)
    approve_all(w, xid)
    r = w.client.get(f"/v1/extracts/{xid}/download", headers=w.h("researcher"))
    assert r.status_code == 200, r.text
    return xid, r.content


# ---- the integer-program attacker -------------------------------------------------------------
Item = tuple[int, str, Any]   # (table, "cell" | "margin" | "total", key)


def _key(v: Any) -> str | None:
    return None if v is None else str(v)


def _published(tables: list[bytes]) -> tuple[dict[Item, int | None], list[dict[Item, int]]]:
    """Every published count (None = suppressed) and every sum the attacker knows holds."""
    value: dict[Item, int | None] = {}
    eqs: list[dict[Item, int]] = []
    dims_of: list[list[str]] = []
    cells_of: list[list[tuple[tuple[str | None, ...], Item]]] = []
    for t, content in enumerate(tables):
        data = package_data(content)
        margins = json.loads(zip_member(content, "margins.json"))
        dims = [c for c in data.column_names if c not in ("count", "suppressed")]
        dims_of.append(dims)
        cells = []
        for row in data.to_pylist():
            levels = tuple(_key(row[d]) for d in dims)
            item: Item = (t, "cell", levels)
            value[item] = row["count"]
            cells.append((levels, item))
        cells_of.append(cells)
        total: Item = (t, "total", None)
        value[total] = margins["_total"][0]["count"]
        if len(dims) == 1:
            eqs.append({**{i: 1 for _, i in cells}, total: -1})
            continue
        for a, d in enumerate(dims):
            row_items: dict[Item, int] = {}
            for m in margins[d]:
                mi: Item = (t, "margin", (d, _key(m[d])))
                value[mi] = m["count"]
                eqs.append({**{i: 1 for lv, i in cells if lv[a] == _key(m[d])}, mi: -1})
                row_items[mi] = 1
            eqs.append({**row_items, total: -1})
    # the attacker knows every table counts the same cohort: shared dimensions sum alike
    for t, u in itertools.combinations(range(len(tables)), 2):
        shared = [d for d in dims_of[t] if d in dims_of[u]]
        if not shared:
            eqs.append({(t, "total", None): 1, (u, "total", None): -1})
            continue
        groups: dict[tuple[str | None, ...], dict[Item, int]] = {}
        for x, sign in ((t, 1), (u, -1)):
            axes = [dims_of[x].index(d) for d in shared]
            for levels, item in cells_of[x]:
                groups.setdefault(tuple(levels[a] for a in axes), {})[item] = sign
        eqs.extend(groups.values())
    return value, eqs


def attack(tables: list[bytes]) -> dict[str, Any]:
    """Min and max of every suppressed count over all tables; what the attacker gets."""
    value, eqs = _published(tables)
    unknown = sorted((i for i, v in value.items() if v is None), key=repr)
    col = {i: c for c, i in enumerate(unknown)}
    rows = [eq for eq in eqs if any(i in col for i in eq)]
    a = np.zeros((len(rows), len(unknown)))
    rhs = np.zeros(len(rows))
    for r, eq in enumerate(rows):
        for i, coef in eq.items():
            if i in col:
                a[r, col[i]] = coef
            else:
                rhs[r] -= coef * value[i]  # type: ignore[operator]
    cons = LinearConstraint(a, rhs, rhs)
    bounds = Bounds(np.ones(len(unknown)), np.full(len(unknown), np.inf))
    ranges: dict[Item, tuple[float, float]] = {}
    for i in unknown:
        c = np.zeros(len(unknown))
        c[col[i]] = 1.0
        lo = milp(c, constraints=cons, bounds=bounds, integrality=np.ones(len(unknown)))
        assert lo.status == 0, f"the published tables admit no counts at all: {lo.message}"
        hi = milp(-c, constraints=cons, bounds=bounds, integrality=np.ones(len(unknown)))
        ranges[i] = (round(lo.x[col[i]]), math.inf if hi.status in (3, 4) else round(hi.x[col[i]]))
    cells = {i: r for i, r in ranges.items() if i[1] == "cell"}
    return {
        "suppressed_cells": len(cells),
        "recovered": sum(1 for lo, hi in cells.values() if lo == hi),
        "recovered_ones": sum(1 for lo, hi in cells.values() if lo == hi == 1),
        "narrow": sum(1 for lo, hi in cells.values() if hi - lo < PROTECTION_WIDTH),
        "narrow_any_item": sum(1 for lo, hi in ranges.values() if hi - lo < PROTECTION_WIDTH),
    }


def test_an_integer_program_over_every_table_a_researcher_holds_recovers_no_count(
        lw: World) -> None:
    race, sex, program = "agency_a.race_ethnicity", "agency_a.sex", "agency_a.program"
    attrs = [_attr("race_ethnicity"), _attr("sex"), _attr("program")]
    tables = [_release(lw, kind="aggregate", attributes=attrs, dimensions=dims)[1]
              for dims in ([race, program, sex], [race, program], [race, sex], [program], [race])]
    got = attack(tables)
    print("linked-table attack:", got)
    assert got["suppressed_cells"] > 0
    assert got["recovered"] == 0 and got["narrow"] == 0 and got["narrow_any_item"] == 0, got
    # each build's report says what the joint protection did (no count of a suppressed cell)
    r = lw.client.get("/v1/extracts", headers=lw.h("researcher")).json()["extracts"]
    assert len(r) == 5 and all(x["build_state"] == "built" for x in r)


def test_several_tables_of_one_request_and_its_rebuild_stay_protected(lw: World) -> None:
    """One request (a table with its margins) and its rebuild: the same protection holds
    within the request and against its own earlier delivery."""
    race, program = "agency_a.race_ethnicity", "agency_a.program"
    attrs = [_attr("race_ethnicity"), _attr("program")]
    xid, first = _release(lw, kind="aggregate", attributes=attrs, dimensions=[race, program])
    assert attack([first])["narrow_any_item"] == 0
    assert lw.client.post(f"/v1/extracts/{xid}/build", headers=lw.h("researcher")).status_code == 202
    extract_flow(lw).wait(60)
    second = lw.client.get(f"/v1/extracts/{xid}/download", headers=lw.h("researcher"))
    assert second.status_code == 200
    got = attack([first, second.content])
    assert got["recovered"] == 0 and got["narrow_any_item"] == 0, got


# ---- the differencing attacker ----------------------------------------------------------------
def _content_rows(table: pa.Table) -> Counter[tuple[Any, ...]]:
    """Released rows as the attacker matches them across projects: every column but the
    project's pseudonym."""
    person = next(c for c in table.column_names if c == "person_id")
    cols = [c for c in table.column_names if c != person]
    return Counter(tuple(r[c] for c in cols) for r in table.to_pylist())


def isolated_across_projects(first: pa.Table, second: pa.Table, k: int) -> int:
    """Rows only in one release (by content); isolated when there are 1..k-1 of them."""
    a, b = _content_rows(first), _content_rows(second)
    only = [sum((a - b).values()), sum((b - a).values())]
    return sum(1 for n in only if 0 < n < k)


def _enrolment_months() -> list[tuple[dt.date, int]]:
    """Month ends with how many agency-A records enrolled in that month (plaintext side)."""
    months: Counter[dt.date] = Counter()
    for r in records()[A]:
        on = (r.get("attributes") or {}).get("enrolled_on")
        if on and r.get("research_consent") is not False:
            d = dt.date.fromisoformat(on)
            months[d.replace(day=1)] += 1
    return sorted(months.items())


def test_two_cohorts_a_month_apart_isolate_no_enrollee(lw: World) -> None:
    k = 5
    months = _enrolment_months()
    # the latest month with a few (1..k-1) enrolments: the second cohort adds only them
    start, _n = next((m, n) for m, n in reversed(months) if 0 < n < k)
    end_1 = start - dt.timedelta(days=1)
    end_2 = (start + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
    attrs = [_attr("race_ethnicity"), _attr("program")]
    released = []
    for end in (end_1, end_2):
        cohort = {"agency": A, "attribute": "enrolled_on", "end": end.isoformat()}
        released.append(package_data(_release(lw, attributes=attrs, cohort=cohort, k=k)[1]))
    isolated = isolated_across_projects(released[0], released[1], k)
    print("differencing attack, two cohorts a month apart: isolated groups", isolated,
          "persons", len(pseudonyms(released[0])), len(pseudonyms(released[1])))
    assert isolated == 0


def test_a_rebuild_after_an_opt_out_does_not_reveal_who_left(lw: World) -> None:
    k = 5
    attrs = [_attr("race_ethnicity"), _attr("program")]
    xid, first = _release(lw, attributes=attrs, k=k)
    # the one who opts out is a person of the first release (disclosure control may have left
    # some consenting persons out of it; an opt-out of one of those would test nothing)
    secret = delivery.read_project_secret(lw.data_dir, xid)
    consenting = [r for r in records()[A] if r.get("research_consent") is not False]
    keys = [lw.registry.get_record(A, r["source_record_id"])["person_key"] for r in consenting]
    released = pseudonyms(package_data(first))
    rec, who_left = next((r, p) for r, p in zip(
        consenting, pseudonymize(keys, secret).to_pylist(), strict=True) if p in released)
    sid = rec["source_record_id"]
    body = {x: v for x, v in {**rec, "research_consent": False}.items() if x != "source_record_id"}
    assert lw.client.put(f"/v1/records/{sid}", json=body, headers=lw.h(A)).status_code == 200
    assert lw.client.post(f"/v1/extracts/{xid}/build", headers=lw.h("researcher")).status_code == 202
    extract_flow(lw).wait(60)
    second = lw.client.get(f"/v1/extracts/{xid}/download", headers=lw.h("researcher"))
    assert second.status_code == 200, second.text
    before, after = pseudonyms(package_data(first)), pseudonyms(package_data(second.content))
    left = before - after
    report = json.loads(zip_member(second.content, "disclosure_report.json"))
    withheld = report["cross_release"]["persons_withheld"]
    print("differencing attack, rebuild after one opt-out: persons gone", len(left),
          "persons new", len(after - before), "withheld", withheld)
    assert len(after - before) == 0 or len(after - before) >= k
    assert who_left in left and len(left) >= k  # the one who left is one of at least k
    # The withheld count is not fixed: it holds persons of the first release kept out with
    # the one who left (fewer, possibly none, when disclosure control already drops others of
    # the first release in the rebuild, which depends on the random person keys and project
    # secret) and newcomers held back until there are k. What the attacker sees is checked
    # above; the report only has to say how many were withheld.
    assert isinstance(withheld, int) and withheld >= 0
    # the next rebuild singles nobody out against either earlier release. It is usually the
    # second one again, but need not be: its first round differs from the second build's, so
    # disclosure control may drop other persons, who are then padded to k (seen once in about 40 runs)
    assert lw.client.post(f"/v1/extracts/{xid}/build", headers=lw.h("researcher")).status_code == 202
    extract_flow(lw).wait(60)
    third = lw.client.get(f"/v1/extracts/{xid}/download", headers=lw.h("researcher"))
    assert third.status_code == 200, third.text
    again = pseudonyms(package_data(third.content))
    for earlier in (before, after):
        for diff in (earlier - again, again - earlier):
            assert len(diff) == 0 or len(diff) >= k, (len(earlier - again), len(again - earlier))
    assert who_left not in again
