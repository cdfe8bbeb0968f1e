"""The re-identification attacker of issue #16, run against rows extracts the product builds.

Owns: the attacker (holds every agency's plaintext from mpi/synth.py and the published
hierarchies; links each released row back to the plaintext records of its agency compatible
with ALL its released columns, at any generalization level; and each released person through
all their rows) and the bound the issue sets: correct unique re-identifications <= rows / k for
every request, with honest and mislabelled dictionaries (ZIP5, exact dates, birth year and
program classed ``other``), date-shifted requests, three agencies, and entropy l-diversity;
pycanon confirming k over all quasi-identifiers and l on every sensitive column; dictionaries
that mislabel identifying fields refused with a 422 naming the attribute; cohort rows kept
before other agencies' rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pycanon.anonymity import entropy_l_diversity, k_anonymity, l_diversity

from mpi.config import Settings
from mpi.errors import InvalidInput
from mpi.extract.build import AttributeSpec, BuiltExtract, CohortSpec, ExtractSpec, build_extract
from mpi.extract.datasets import validate_dictionary
from mpi.extract.generalize import generalize, pool_old_birth_years
from mpi.extract.hierarchy import build_hierarchy, release
from mpi.extract.pseudonym import pseudonymize
from mpi.identity.pipeline import demo_secret, tokenize_rows
from mpi.identity.registry import Registry
from mpi.synth import generate

NOW = dt.datetime(2026, 3, 1, 12, 0)
A, B, C = "agency_a", "agency_b", "agency_c"
ATTRS = ("race_ethnicity", "birth_year", "program", "enrolled_on", "postal_code")
TYPES = {"race_ethnicity": "string", "birth_year": "integer", "program": "string",
         "enrolled_on": "date", "postal_code": "string"}
SECRET = bytes(range(32))
FLOOR_YEAR = NOW.year - 90


@dataclass
class World:
    """A registry over synthetic people and the attacker's plaintext."""

    reg: Registry
    plain: dict[str, list[dict[str, Any]]]


def _world(tmp: Any, people: int, seed: int) -> World:
    reg = Registry(Settings(data_dir=tmp / "data"))
    rows, _truth = generate(people=people, agencies=3, seed=seed)
    for agency, plain in rows.items():
        recs, _rejected = tokenize_rows(plain, secret=demo_secret(1), attributes=ATTRS)
        res = reg.enrol_records(agency, list(enumerate(recs, start=1)))
        assert not res.problems
    return World(reg, rows)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """2,500 synthetic people at three agencies."""
    w = _world(tmp_path_factory.mktemp("reid"), people=2500, seed=16)
    yield w
    w.reg.close()


def _attr(agency: str, name: str, klass: str, gen: str, **kw: Any) -> AttributeSpec:
    return AttributeSpec(agency=agency, dataset="services", name=name, type=TYPES[name],
                         klass=klass, description=name, generalization=gen, **kw)


# The requests: the issue's (unmarked program and enrolment month), a mislabelled dictionary
# (ZIP5, exact dates and birth year as `other` with no generalization: what an older dictionary
# could still hold), date shifting, three agencies, and entropy l-diversity.
REQUESTS: dict[str, dict[str, Any]] = {
    "issue": dict(attributes=(
        _attr(A, "birth_year", "quasi_identifier", "none"),
        _attr(A, "race_ethnicity", "quasi_identifier", "none"),
        _attr(A, "postal_code", "quasi_identifier", "zip3"),
        _attr(A, "program", "other", "none"),
        _attr(A, "enrolled_on", "other", "month")), k=5),
    "mislabelled": dict(attributes=(
        _attr(A, "postal_code", "other", "none"),
        _attr(A, "enrolled_on", "other", "none"),
        _attr(A, "birth_year", "other", "none"),
        _attr(A, "program", "other", "none")), k=5),
    "date_shifted": dict(attributes=(
        _attr(A, "birth_year", "quasi_identifier", "none"),
        _attr(A, "enrolled_on", "other", "none"),
        _attr(A, "program", "other", "none")), k=5, date_shift=True),
    "three_agencies": dict(attributes=(
        _attr(A, "birth_year", "quasi_identifier", "none"),
        _attr(A, "program", "sensitive", "none"),
        _attr(B, "enrolled_on", "other", "month"),
        _attr(B, "race_ethnicity", "quasi_identifier", "none"),
        _attr(C, "postal_code", "quasi_identifier", "zip3"),
        _attr(C, "program", "sensitive", "none")), k=3),
    "entropy_l": dict(attributes=(
        _attr(A, "birth_year", "quasi_identifier", "none"),
        _attr(A, "race_ethnicity", "quasi_identifier", "none"),
        _attr(A, "program", "sensitive", "none")), k=4, l=3, l_entropy=True),
}


def _spec(name: str) -> ExtractSpec:
    return ExtractSpec(extract_id=f"x_{name}", title=name, kind="rows",
                       cohort=CohortSpec(agency=A), **REQUESTS[name])


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
    return pq.read_table(pa.BufferReader(b.files["data.parquet"]))


# ---- the attacker -----------------------------------------------------------------------------
def _candidates(w: World, spec: ExtractSpec, data: pa.Table, shifted: set[str]
                ) -> tuple[dict[str, list[str]], dict[str, npt.NDArray[Any]]]:
    """Per agency: the plaintext record ids, and per released row the compatibility mask over
    them (every released column of the row's agency, at any level of its hierarchy)."""
    masks: dict[str, npt.NDArray[Any]] = {}
    ids: dict[str, list[str]] = {}
    agency_col = data.column("agency").to_pylist()
    for agency in sorted({a.agency for a in spec.attributes} | {spec.cohort.agency}):
        plain = w.plain[agency]
        ids[agency] = [r["source_record_id"] for r in plain]
        rows = [i for i, a in enumerate(agency_col) if a == agency]
        mask = np.ones((len(rows), len(plain)), dtype=bool)
        for a in spec.attributes:
            col = f"{a.agency}.{a.name}"
            if a.agency != agency or col not in data.column_names or col in shifted:
                continue   # shifted dates: the attacker does not know the shift
            raw = pa.table({a.name: pa.array([r.get(a.name) or None for r in plain], pa.string())})
            level0 = generalize(raw, {a.name: a.generalization}, types={a.name: a.type}).column(0)
            if a.name == "birth_year":
                level0, _n = pool_old_birth_years(level0, floor_year=FLOOR_YEAR)
            h = build_hierarchy(col, level0, name=a.name, type=a.type,
                                generalization=a.generalization, grouping=a.hierarchy)
            index: dict[str, npt.NDArray[np.bool_]] = {}
            for lv in range(len(h.levels)):
                values = release(h, np.full(len(plain), lv, dtype=np.int64)).cast(pa.string())
                for j, v in enumerate(values.to_pylist()):
                    if v is not None:
                        index.setdefault(v, np.zeros(len(plain), dtype=bool))[j] = True
            released = data.column(col).cast(pa.string()).to_pylist()
            none = np.zeros(len(plain), dtype=bool)
            for r_i, row in enumerate(rows):
                v = released[row]
                if v is not None:       # null: missing or suppressed, no constraint
                    mask[r_i] &= index.get(v, none)
        for r_i, row in enumerate(rows):
            masks[str(row)] = mask[r_i]
        masks[f"rows:{agency}"] = np.asarray(rows)
    return ids, masks


@dataclass
class Attack:
    rows: int
    unique_rows: int
    correct_rows: int
    persons: int
    unique_persons: int
    correct_persons: int


def attack(w: World, built: BuiltExtract, spec: ExtractSpec) -> Attack:
    """Link every released row (and person) back to the plaintext."""
    data = _data(built)
    shifted = set(built.disclosure_report["date_shift"]["columns"])
    ids, masks = _candidates(w, spec, data, shifted)
    keys = dict(w.reg.store.cursor().execute(
        "SELECT agency || '/' || source_record_id, person_key FROM source_record").fetchall())
    pid = {k: p for k, p in zip(keys, pseudonymize(list(keys.values()), SECRET).to_pylist(),
                                strict=True)}
    person_col = data.column("person_id").to_pylist()
    agency_col = data.column("agency").to_pylist()
    unique = correct = 0
    per_person: dict[str, set[str | None]] = {}
    for row in range(data.num_rows):
        agency = agency_col[row]
        hits = np.flatnonzero(masks[str(row)])
        owners = {pid.get(f"{agency}/{ids[agency][j]}") for j in hits}
        if len(hits) == 1:
            unique += 1
            correct += next(iter(owners)) == person_col[row]
        seen = per_person.get(person_col[row])
        per_person[person_col[row]] = owners if seen is None else seen & owners
    u_persons = sum(1 for s in per_person.values() if len(s) == 1)
    c_persons = sum(1 for p, s in per_person.items() if s == {p})
    return Attack(data.num_rows, unique, correct, len(per_person), u_persons, c_persons)


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
    ok = validate_dictionary([{"name": "program", "type": "string", "class": "other",
                               "description": "d", "allowed_generalizations": ["none"],
                               "hierarchy": {"SNAP": "food", "WIC": "food"},
                               "non_identifying_signed_off_by": "pr_steward"}])
    assert ok[0]["hierarchy"] == [{"SNAP": "food", "WIC": "food"}]
