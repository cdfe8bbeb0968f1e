"""The re-identification attacker of issue #16, run against rows extracts the product builds.

Owns: the attacker's targets (the attacker itself, tests/support/reid.py, holds every
agency's plaintext from mpi/synth.py and the published hierarchies; links each released row
back to the plaintext records of its agency compatible with ALL its released columns, at any
generalization level; and each released person through all their rows) and the bound the
issue sets: correct unique re-identifications <= rows / k for every request, with honest and
mislabelled dictionaries (ZIP5, exact dates, birth year and program classed ``other``),
date-shifted requests, three agencies, and entropy l-diversity; pycanon confirming k over all
quasi-identifiers and l on every sensitive column; dictionaries that mislabel identifying
fields refused with a 422 naming the attribute; cohort rows kept before other agencies' rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
from pycanon.anonymity import entropy_l_diversity, k_anonymity, l_diversity

from mpi.errors import InvalidInput
from mpi.extract.build import BuiltExtract, CohortSpec, ExtractSpec, build_extract
from mpi.extract.datasets import validate_dictionary
from tests.support.reid import NOW, REQUESTS, SECRET, A, Attack, World, record_persons, released_table
from tests.support.reid import attack as reid_attack
from tests.support.reid import request_spec as _spec
from tests.support.reid import synthetic_world as _world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """2,500 synthetic people at three agencies."""
    w = _world(tmp_path_factory.mktemp("reid"), people=2500, seed=16)
    yield w
    w.reg.close()


@pytest.mark.integration
def test_a_date_window_cohort_has_journalist_risk_against_the_agency_population(world: World) -> None:
    """Journalist risk uses the cohort agency's consented population as the population table
    (Decision 74): with a date window it is at most, and on average below, prosecutor risk."""
    spec = ExtractSpec(extract_id="x_window", title="window", kind="rows", k=5,
                       attributes=REQUESTS["issue"]["attributes"],
                       cohort=CohortSpec(agency=A, attribute="enrolled_on",
                                         start=dt.date(2015, 1, 1), end=dt.date(2018, 12, 31)))
    built = build_extract(world.reg, spec, project_secret=SECRET, now=NOW)
    rep = built.disclosure_report["k_anonymity"]
    assert rep["population_rows"] > rep["records_in"] > 0
    for risk in (rep["risk_before"], rep["risk"]):
        assert risk["journalist_max"] <= risk["prosecutor_max"]
        assert risk["journalist_mean"] <= risk["prosecutor_mean"]
        assert risk["marketer"] <= risk["prosecutor_mean"]
    assert rep["risk"]["journalist_mean"] < rep["risk"]["prosecutor_mean"]
    _pycanon(built, spec)
    result = attack(world, built, spec)
    assert result.correct_rows <= result.rows / spec.k, result


def _data(b: BuiltExtract) -> pa.Table:
    return released_table(b)


def attack(w: World, built: BuiltExtract, spec: ExtractSpec) -> Attack:
    """Link every released row (and person) back to the plaintext (tests/support/reid.py)."""
    return reid_attack(w.plain, record_persons(w.reg), built, spec, secret=SECRET, now=NOW)


def _pycanon(built: BuiltExtract, spec: ExtractSpec) -> None:
    """pycanon confirms k over every quasi-identifier and l on every sensitive column (in the
    classes of the other quasi-identifiers, on its agency's rows where it is not suppressed)."""
    rep = built.disclosure_report["k_anonymity"]
    df = _data(built).to_pandas()
    qis = rep["quasi_identifiers"]
    frame = df[qis].astype(object).where(df[qis].notna(), "(null)")
    assert k_anonymity(frame, qis) >= spec.k
    for s in rep["sensitive"]:
        agency = s.split(".")[0]
        sub = frame[(df["agency"] == agency) & df[s].notna()].reset_index(drop=True)
        if len(sub):
            others = [q for q in qis if q != s]
            assert l_diversity(sub, others, [s]) >= spec.l
            if spec.l_entropy:
                assert entropy_l_diversity(sub, others, [s]) >= spec.l - 1e-9


# ---- the tests --------------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize("name", list(REQUESTS))
def test_attacker_re_identifies_at_most_rows_over_k(world: World, name: str) -> None:
    spec = _spec(name)
    built = build_extract(world.reg, spec, project_secret=SECRET, now=NOW)
    rep = built.disclosure_report["k_anonymity"]
    assert built.rows > 0.4 * rep["records_in"]   # generalization, not mass suppression
    _pycanon(built, spec)
    result = attack(world, built, spec)
    assert result.correct_rows <= result.rows / spec.k, result
    assert result.correct_persons <= result.persons / spec.k, result
    # the report approvers see: risk before and after, utility, levels, suppression reasons
    assert rep["risk"]["prosecutor_max"] <= 1 / spec.k + 1e-9
    assert rep["risk"]["sample_uniques"] == 0 and rep["risk"]["records_at_risk"] == 0
    assert rep["risk_before"]["sample_uniques"] > 0
    assert rep["utility"]["suppressed_share"] == pytest.approx(
        rep["records_suppressed"] / rep["records_in"], abs=1e-6)
    assert set(rep["generalization_levels"]) == set(rep["quasi_identifiers"][1:])
    # cohort rows are kept before other agencies' rows
    cohort = rep["cohort_agency_rows"]
    other_in = rep["records_in"] - cohort["in"]
    other_out = rep["records_out"] - cohort["out"]
    if other_in:
        assert cohort["out"] / cohort["in"] >= other_out / other_in


@pytest.mark.integration
def test_the_issue_attack_before_control_re_identifies_most_rows(world: World) -> None:
    """The same attacker against the request's own generalization alone (what the product
    released before issue #16): most rows come back, so the attacker is a real one."""
    spec = _spec("issue")
    loose = ExtractSpec(**{**spec.__dict__, "k": 1, "l": 1, "max_suppression": 0.0})
    built = build_extract(world.reg, loose, project_secret=SECRET, now=NOW)
    assert built.disclosure_report["k_anonymity"]["records_suppressed"] == 0
    result = attack(world, built, loose)
    assert result.correct_rows > 0.5 * result.rows, result


@pytest.mark.parametrize("entry", [
    {"name": "postal_code", "type": "string", "class": "other", "allowed_generalizations": ["none"],
     "default_generalization": "none"},
    {"name": "enrolled_on", "type": "date", "class": "other",
     "allowed_generalizations": ["none", "month"], "default_generalization": "month"},
    {"name": "birth_year", "type": "integer", "class": "other", "allowed_generalizations": ["none"]},
    {"name": "age", "type": "integer", "class": "other", "allowed_generalizations": ["none"],
     "default_generalization": "none"},
])
def test_a_dictionary_releasing_identifying_fields_as_other_is_refused(entry: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as err:
        validate_dictionary([{**entry, "description": "d"}])
    assert [p.field for p in err.value.problems] == ["class"]
    assert entry["name"] in err.value.problems[0].reason


def test_identifying_fields_cannot_be_signed_off_and_groupings_are_checked() -> None:
    with pytest.raises(InvalidInput) as err:
        validate_dictionary([{"name": "postal_code", "type": "string", "class": "quasi_identifier",
                              "description": "d", "allowed_generalizations": ["zip3"],
                              "non_identifying_signed_off_by": "pr_steward"}])
    assert [p.field for p in err.value.problems] == ["non_identifying_signed_off_by"]
    with pytest.raises(InvalidInput) as err:
        validate_dictionary([{"name": "program", "type": "string", "class": "other",
                              "description": "d", "allowed_generalizations": ["none"],
                              "hierarchy": {"SNAP": 3}}])
    assert [p.field for p in err.value.problems] == ["hierarchy"]
    with pytest.raises(InvalidInput) as err:   # the agency never writes a sign-off (Decision 94)
        validate_dictionary([{"name": "household", "type": "string", "class": "other",
                              "description": "d", "allowed_generalizations": ["none"],
                              "non_identifying_signed_off_by": "pr_steward"}])
    assert [p.field for p in err.value.problems] == ["non_identifying_signed_off_by"]
    ok = validate_dictionary([{"name": "program", "type": "string", "class": "other",
                               "description": "d", "allowed_generalizations": ["none"],
                               "hierarchy": {"SNAP": "food", "WIC": "food"}}])
    assert ok[0]["hierarchy"] == [{"SNAP": "food", "WIC": "food"}]
