"""Building research extracts (issue #5 §3) on a real registry from a seeded synthetic set.

Owns: the checks the issue asks of a build: opted-out persons absent (also through a withdrawn
record), k-anonymity confirmed independently by pycanon on every row extract these tests build
(``_build``) and on person signatures,
byte-identical rebuilds and disjoint pseudonyms across projects, no person key, source record
id, stored token or key id anywhere in the files, the cohort date filter, date shifting that
keeps intervals, aggregate cells, and the linkage-quality report (shape, estimators checked
against brute force, label rates on planted labels, small groups suppressed).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycanon.anonymity import k_anonymity

from mpi.config import Settings
from mpi.errors import InvalidInput
from mpi.extract import quality
from mpi.extract.build import (
    AttributeSpec,
    BuiltExtract,
    CohortSpec,
    ExtractSpec,
    build_extract,
    check_spec,
)
from mpi.extract.pseudonym import date_shift_days, new_project_secret, pseudonymize
from mpi.identity.pipeline import demo_secret, tokenize_rows
from mpi.identity.registry import Registry
from mpi.linkage.params import probability
from mpi.store import extracts_read as xread
from mpi.store import labels as lstore
from mpi.synth import generate

NOW = dt.datetime(2026, 3, 1, 12, 0)
A, B, C = "agency_a", "agency_b", "agency_c"
ATTRS = ("race_ethnicity", "birth_year", "program", "enrolled_on", "postal_code")
SECRET = bytes(range(32))


def _enrol(reg: Registry, *, people: int, seed: int) -> None:
    rows, _truth = generate(people=people, agencies=3, seed=seed)
    for agency, plain in rows.items():
        recs, _rejected = tokenize_rows(plain, secret=demo_secret(1), attributes=ATTRS)
        res = reg.enrol_records(agency, list(enumerate(recs, start=1)))
        assert not res.problems


def _attr(agency: str, name: str, type: str, klass: str, gen: str) -> AttributeSpec:
    return AttributeSpec(agency=agency, dataset="services", name=name, type=type, klass=klass,
                         description=f"{name} at {agency}", generalization=gen)


def _spec(**kw: Any) -> ExtractSpec:
    base: dict[str, Any] = dict(
        extract_id="x1", title="Services used together", kind="rows",
        attributes=(
            _attr(A, "race_ethnicity", "string", "quasi_identifier", "none"),
            _attr(A, "program", "string", "sensitive", "none"),
            _attr(A, "enrolled_on", "date", "other", "month"),
            _attr(B, "race_ethnicity", "string", "quasi_identifier", "none"),
            _attr(B, "program", "string", "sensitive", "none"),
            _attr(B, "enrolled_on", "date", "other", "year"),
            _attr(B, "postal_code", "string", "other", "suppress"),
        ),
        cohort=CohortSpec(agency=A), k=5, demographics=(f"{A}.race_ethnicity",))
    base.update(kw)
    if base["k"] == 1:   # issue #16: l-diversity (default l = 2) is off too when k is 1
        base.setdefault("l", 1)
    return ExtractSpec(**base)


def _build(registry: Registry, spec: ExtractSpec, **kw: Any) -> BuiltExtract:
    """build_extract, with pycanon confirming k-anonymity of every row extract built here."""
    out = build_extract(registry, spec, **kw)
    if spec.kind == "rows" and out.rows:
        qis = out.disclosure_report["k_anonymity"]["quasi_identifiers"]
        assert k_anonymity(_qi_frame(_data(out), qis), qis) >= spec.k
    return out


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """One registry of 700 synthetic people at three agencies, shared by the read-only tests."""
    registry = Registry(Settings(data_dir=tmp_path_factory.mktemp("x") / "data"))
    _enrol(registry, people=700, seed=21)
    yield registry
    registry.close()


@pytest.fixture(scope="module")
def built(reg: Registry) -> BuiltExtract:
    """The default row extract over ``reg``."""
    return _build(reg, _spec(), project_secret=SECRET, now=NOW)


def _sql(reg: Registry, sql: str, params: list[Any] | None = None) -> list[Any]:
    return reg.store.cursor().execute(sql, params or []).fetchall()


def _data(b: BuiltExtract) -> pa.Table:
    return pq.read_table(pa.BufferReader(b.files["data.parquet"]))


def _opted_out(reg: Registry) -> set[str]:
    return {r[0] for r in _sql(reg, "SELECT DISTINCT person_key FROM source_record "
                                    "WHERE research_consent = false")}


# ---- consent ----------------------------------------------------------------------------------
def test_opted_out_persons_are_absent(reg: Registry, built: BuiltExtract) -> None:
    opted = _opted_out(reg)
    cohort = {r[0] for r in _sql(reg, "SELECT DISTINCT person_key FROM source_record "
                                      "WHERE status = 'active' AND agency = ?", [A])}
    assert len(opted & cohort) > 5  # the synthetic set has opt-outs in the cohort
    assert not opted & set(built.person_keys)
    released_ids = set(_data(built).column("person_id").to_pylist())
    assert not released_ids & set(pseudonymize(sorted(opted), SECRET).to_pylist())
    cohort_report = built.disclosure_report["cohort"]
    assert cohort_report["persons"] == len(cohort)
    assert cohort_report["persons_opted_out_excluded"] == len(opted & cohort)
    # every released person is in the cohort and never opted out
    assert set(built.person_keys) <= cohort - opted


def test_an_opt_out_on_a_withdrawn_record_still_excludes_the_person(tmp_path: Path) -> None:
    registry = Registry(Settings(data_dir=tmp_path / "d"))
    try:
        _enrol(registry, people=150, seed=3)
        # a person with records at A and B whose B record says "no" and is then withdrawn
        row = _sql(registry, """
            SELECT b.source_record_id, b.person_key FROM source_record b
            JOIN source_record a ON a.person_key = b.person_key AND a.agency = ?
            WHERE b.agency = ? AND b.research_consent = false AND a.research_consent
            AND NOT EXISTS (SELECT 1 FROM source_record o WHERE o.person_key = b.person_key
                            AND o.research_consent = false AND o.record_seq <> b.record_seq)
            LIMIT 1""", [A, B])
        assert row, "the seeded set has such a person"
        sid, key = row[0]
        spec = _spec(demographics=(), k=1)  # nobody suppressed: presence is consent alone
        registry.withdraw_records(B, [sid])
        out = _build(registry, spec, project_secret=SECRET, now=NOW)
        assert key not in out.person_keys
        # consent true again on a new version of that record lifts the exclusion: the rule
        # reads current versions only
        registry.store.cursor().execute(
            "UPDATE source_record SET research_consent = true WHERE source_record_id = ? "
            "AND agency = ?", [sid, B])
        again = _build(registry, spec, project_secret=SECRET, now=NOW)
        assert again.disclosure_report["cohort"]["persons_opted_out_excluded"] == \
            out.disclosure_report["cohort"]["persons_opted_out_excluded"] - 1
        assert key in again.person_keys
        # an opt-out on a withdrawn record whose key was since retired into another person's
        # key (a merge) follows the lineage: that person is excluded
        other = next(k for k in again.person_keys if k != key)
        registry.store.cursor().execute(
            "UPDATE source_record SET research_consent = false, person_key = 'pk_retired' "
            "WHERE source_record_id = ? AND agency = ?", [sid, B])
        registry.store.cursor().execute(
            "INSERT INTO key_lineage VALUES ('pk_retired', ?, 'merge', 0)", [other])
        merged = _build(registry, spec, project_secret=SECRET, now=NOW)
        assert other not in merged.person_keys and key in merged.person_keys
    finally:
        registry.close()


# ---- k-anonymity ------------------------------------------------------------------------------
def _qi_frame(table: pa.Table, qis: list[str]) -> pd.DataFrame:
    df = table.select(qis).to_pandas()
    return df.astype(object).where(df.notna(), "(null)")


def test_k_anonymity_holds_on_rows_per_pycanon_and_on_person_signatures(built: BuiltExtract) -> None:
    rep = built.disclosure_report["k_anonymity"]
    qis = rep["quasi_identifiers"]
    # issue #16: every released column but the pseudonym is a quasi-identifier (sensitive and
    # `other` ones too), and so is the link probability
    assert qis == ["agency", f"{A}.race_ethnicity", f"{A}.program", f"{A}.enrolled_on",
                   f"{B}.race_ethnicity", f"{B}.program", f"{B}.enrolled_on",
                   "link_match_probability"]
    data = _data(built)
    assert data.num_rows == built.rows > 100
    assert k_anonymity(_qi_frame(data, qis), qis) >= 5
    df = _qi_frame(data, ["person_id", *qis])
    sigs = df.groupby("person_id").apply(
        lambda g: tuple(sorted(set(map(tuple, g[qis].values.tolist())))), include_groups=False)
    assert sigs.value_counts().min() >= 5
    assert rep["records_in"] - rep["records_out"] == rep["records_suppressed"] == \
        rep["records_suppressed_row_level"] + rep["records_suppressed_person_level"]
    assert rep["records_out"] == data.num_rows


def test_k_anonymity_with_a_fine_quasi_identifier_suppresses_and_still_holds(reg: Registry) -> None:
    spec = _spec(attributes=(
        _attr(A, "birth_year", "integer", "quasi_identifier", "none"),
        _attr(A, "enrolled_on", "date", "quasi_identifier", "none"),
        _attr(A, "program", "string", "sensitive", "none")), k=3, demographics=())
    out = _build(reg, spec, project_secret=SECRET, now=NOW)
    rep = out.disclosure_report["k_anonymity"]
    data = _data(out)
    # exact enrolment dates are unique; the hierarchy coarsens them before suppressing
    further = rep["generalized_further"].get(f"{A}.enrolled_on")
    assert further and any(n in further for n in ("month", "quarter", "year", "*"))
    assert rep["records_suppressed"] > 0
    qis = rep["quasi_identifiers"]
    if data.num_rows:
        assert k_anonymity(_qi_frame(data, qis), qis) >= 3
    entry = next(e for e in json.loads(out.files["dictionary.json"])["columns"]
                 if e["column"] == f"{A}.enrolled_on")
    assert entry["generalized_further"] == rep["generalized_further"][f"{A}.enrolled_on"]


# ---- determinism and pseudonyms ---------------------------------------------------------------
DATA_FILES = ("data.parquet", "data.csv", "dictionary.json", "dictionary.md",
              "linkage_quality.json", "linkage_quality.md", "disclosure_report.json")


def test_rebuild_is_byte_identical_and_projects_share_no_pseudonym(reg: Registry,
                                                                   built: BuiltExtract) -> None:
    before = (reg.stats(), len(reg.list_audit(limit=10_000)))
    again = _build(reg, _spec(), project_secret=SECRET, now=NOW)
    assert (reg.stats(), len(reg.list_audit(limit=10_000))) == before  # a build only reads
    for name in DATA_FILES:
        assert again.files[name] == built.files[name], name
    assert set(again.files) == set(built.files)
    other = _build(reg, _spec(), project_secret=new_project_secret(), now=NOW)
    ids = set(_data(built).column("person_id").to_pylist())
    other_ids = set(_data(other).column("person_id").to_pylist())
    assert ids and other_ids and not ids & other_ids
    # same cohort: the other project sees the same people under other ids
    assert other.person_keys == built.person_keys


def test_writers_go_on_during_a_build_and_the_build_reads_one_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The build reads and scores without the write lock (seconds at 1M records), from
    snapshots taken under it (DuckDB's and the index's): records enrolled meanwhile are stored
    at once and are not in this build, which is byte-identical to one built with no writer
    about."""
    registry = Registry(Settings(data_dir=tmp_path / "data"))
    try:
        _enrol(registry, people=150, seed=5)
        quiet = build_extract(registry, _spec(), project_secret=SECRET, now=NOW)
        rows, _truth = generate(people=100, agencies=1, seed=77)  # > 64: straight to DuckDB
        extra, _rej = tokenize_rows(next(iter(rows.values())), secret=demo_secret(1),
                                    attributes=ATTRS)
        extra = [dict(r, source_record_id=f"late-{i}") for i, r in enumerate(extra)]
        counts = xread.cohort_counts
        outcomes: list[str] = []

        def writer() -> None:  # another thread: would wait if the build held the lock
            assert registry.store.write_lock.acquire(timeout=10), "the build holds the lock"
            registry.store.write_lock.release()
            res = registry.enrol_records(A, list(enumerate(extra, start=1)))
            outcomes.extend(r.outcome for r in res.results)

        def reading_while_a_writer_runs(*a: Any, **kw: Any) -> dict[str, int]:
            t = threading.Thread(target=writer)  # before the build's first read
            t.start()
            t.join(30)
            assert not t.is_alive()
            return counts(*a, **kw)

        monkeypatch.setattr(xread, "cohort_counts", reading_while_a_writer_runs)
        during = build_extract(registry, _spec(), project_secret=SECRET, now=NOW)
        monkeypatch.setattr(xread, "cohort_counts", counts)
        assert len(outcomes) == len(extra) and "new" in outcomes
        for name in DATA_FILES:
            assert during.files[name] == quiet.files[name], name
        after = build_extract(registry, _spec(), project_secret=SECRET, now=NOW)
        # the late records are in now (issue #16: suppression may differ on the new data)
        assert set(after.person_keys) - set(quiet.person_keys)
    finally:
        registry.close()


def test_rebuild_after_reopening_the_registry_is_byte_identical(tmp_path: Path) -> None:
    """A reopened registry rebuilds its in-memory index differently (no recent-rows delta); the
    files must not change."""
    settings_ = Settings(data_dir=tmp_path / "d")
    spec = _spec(demographics=(f"{A}.race_ethnicity", f"{B}.program"))
    registry = Registry(settings_)
    try:
        _enrol(registry, people=150, seed=4)
        first = _build(registry, spec, project_secret=SECRET, now=NOW)
    finally:
        registry.close()
    registry = Registry(settings_)
    try:
        second = _build(registry, spec, project_secret=SECRET, now=NOW)
    finally:
        registry.close()
    assert first.rows > 0 and first.linkage_quality["overall"]["linked_records"] > 0
    assert first.files == second.files


def test_rows_are_sorted_by_pseudonym_then_columns(built: BuiltExtract) -> None:
    data = _data(built)
    assert data.column_names[:2] == ["person_id", "agency"]
    assert data.column_names[-1] == "link_match_probability"
    ids = data.column("person_id").to_pylist()
    assert ids == sorted(ids)
    assert f"{B}.postal_code" not in data.column_names  # suppressed
    assert built.disclosure_report["suppressed_columns"] == [f"{B}.postal_code"]


# ---- nothing identifying --------------------------------------------------------------------
def _identifiers(reg: Registry) -> list[bytes]:
    """Every person key, source record id, stored token (decimal) and key id of the registry."""
    cur = reg.store.cursor()
    out = {str(r[0]) for r in cur.execute("SELECT person_key FROM person").fetchall()}
    out |= {str(r[0]) for r in cur.execute("SELECT source_record_id FROM source_record").fetchall()}
    out |= {str(r[0]) for r in cur.execute("SELECT key_id FROM linkage_key").fetchall()}
    out |= {str(r[0]) for r in cur.execute(
        "SELECT DISTINCT unnest(tokens) AS t FROM source_record").fetchall() if r[0] != 0}
    return sorted(x.encode() for x in out)


def _scan(files: dict[str, bytes], needles: list[bytes]) -> list[tuple[str, bytes]]:
    return [(name, n) for name, blob in files.items() for n in needles if n in blob]


def test_no_identifier_appears_in_any_file(reg: Registry, built: BuiltExtract) -> None:
    needles = _identifiers(reg)
    assert len(needles) > 3000
    assert not _scan(built.files, needles)
    agg = _build(reg, _spec(kind="aggregate", dimensions=(f"{A}.race_ethnicity",)),
                        project_secret=SECRET, now=NOW)
    assert not _scan(agg.files, needles)
    # the scan finds what it looks for
    planted = dict(built.files, **{"data.csv": built.files["data.csv"] + needles[len(needles) // 2]})
    assert _scan(planted, needles) == [("data.csv", needles[len(needles) // 2])]
    # and no record number or person key column is released
    assert set(_data(built).column_names) == {
        "person_id", "agency", "link_match_probability", f"{A}.race_ethnicity", f"{A}.program",
        f"{A}.enrolled_on", f"{B}.race_ethnicity", f"{B}.program", f"{B}.enrolled_on"}


# ---- cohort, generalization, date shift --------------------------------------------------------
def test_cohort_date_range_and_generalizations(reg: Registry) -> None:
    start, end = dt.date(2015, 1, 1), dt.date(2017, 12, 31)
    spec = _spec(cohort=CohortSpec(agency=A, attribute="enrolled_on", start=start, end=end),
                 k=1, demographics=())
    out = _build(reg, spec, project_secret=SECRET, now=NOW)
    in_range = {r[0] for r in _sql(reg, """
        SELECT DISTINCT person_key FROM source_record WHERE status = 'active' AND agency = ?
        AND CAST(json_extract_string(attributes, '$.enrolled_on') AS DATE) BETWEEN ? AND ?""",
        [A, start, end])}
    assert out.person_keys and set(out.person_keys) <= in_range
    assert set(out.person_keys) == in_range - _opted_out(reg)  # k=1: nobody suppressed
    # ALL their active records at the requested agencies, not only the cohort-defining ones
    want_rows = _sql(reg, "SELECT count(*) FROM source_record WHERE status = 'active' AND "
                          "agency IN (?, ?) AND person_key IN (SELECT unnest(?))",
                     [A, B, out.person_keys])[0][0]
    assert out.rows == want_rows > len(out.person_keys)
    data = _data(out)
    months = [m for m in data.column(f"{A}.enrolled_on").to_pylist() if m is not None]
    years = [y for y in data.column(f"{B}.enrolled_on").to_pylist() if y is not None]
    assert months and all(len(m) == 7 and m[4] == "-" for m in months)
    assert years and all(len(y) == 4 for y in years)
    # attribute columns hold values only on their own agency's rows
    agencies = data.column("agency").to_pylist()
    for col, owner in ((f"{A}.program", A), (f"{B}.program", B)):
        assert all(a == owner for a, v in zip(agencies, data.column(col).to_pylist(), strict=True)
                   if v is not None)


def test_date_shift_keeps_intervals_within_a_person(reg: Registry) -> None:
    spec = _spec(attributes=(_attr(A, "enrolled_on", "date", "other", "date_shift"),
                             _attr(B, "enrolled_on", "date", "other", "date_shift")),
                 date_shift=True, k=1, demographics=())
    out = _build(reg, spec, project_secret=SECRET, now=NOW)
    raw = _sql(reg, "SELECT person_key, agency, CAST(json_extract_string(attributes, "
                    "'$.enrolled_on') AS DATE) FROM source_record WHERE status = 'active' "
                    "AND person_key IN (SELECT unnest(?))", [out.person_keys])
    ids = dict(zip(out.person_keys, pseudonymize(out.person_keys, SECRET).to_pylist(), strict=True))
    shifts = dict(zip(out.person_keys, date_shift_days(out.person_keys, SECRET).to_pylist(),
                      strict=True))
    expected = sorted((ids[k], ag, d + dt.timedelta(days=shifts[k])) for k, ag, d in raw
                      if ag in (A, B) and d is not None)
    data = _data(out).to_pylist()
    got = sorted((r["person_id"], r["agency"], r[f"{r['agency']}.enrolled_on"]) for r in data
                 if r[f"{r['agency']}.enrolled_on"] is not None)
    assert got == expected
    assert any(s != 0 for s in shifts.values()) and out.disclosure_report["date_shift"]["applied"]


def test_the_date_shift_flag_shifts_every_date_before_its_month(reg: Registry) -> None:
    spec = _spec(attributes=(_attr(A, "enrolled_on", "date", "other", "month"),
                             _attr(A, "program", "string", "other", "none")),
                 date_shift=True, k=1, demographics=())
    out = _build(reg, spec, project_secret=SECRET, now=NOW)
    raw = _sql(reg, "SELECT person_key, CAST(json_extract_string(attributes, '$.enrolled_on') "
                    "AS DATE) FROM source_record WHERE status = 'active' AND agency = ? "
                    "AND person_key IN (SELECT unnest(?))", [A, out.person_keys])
    ids = dict(zip(out.person_keys, pseudonymize(out.person_keys, SECRET).to_pylist(), strict=True))
    shifts = dict(zip(out.person_keys, date_shift_days(out.person_keys, SECRET).to_pylist(),
                      strict=True))
    want = sorted((ids[k], (d + dt.timedelta(days=shifts[k])).strftime("%Y-%m")) for k, d in raw)
    data = _data(out)
    got = sorted((p, m) for p, a, m in zip(data.column("person_id").to_pylist(),
                                             data.column("agency").to_pylist(),
                                             data.column(f"{A}.enrolled_on").to_pylist(),
                                             strict=True) if a == A)
    assert got == want
    unshifted = sorted((ids[k], d.strftime("%Y-%m")) for k, d in raw)
    assert got != unshifted
    report = out.disclosure_report
    assert report["date_shift"]["columns"] == [f"{A}.enrolled_on"]
    assert report["generalization"][f"{A}.enrolled_on"]["date_shifted"]
    assert "date_shift, month" in out.files["dictionary.md"].decode()


def test_a_value_that_does_not_parse_names_the_attribute_never_the_value(tmp_path: Path) -> None:
    registry = Registry(Settings(data_dir=tmp_path / "d"))
    try:
        _enrol(registry, people=40, seed=5)
        registry.store.cursor().execute(
            "UPDATE source_record SET attributes = '{\"enrolled_on\":\"SECRET-VALUE-42\"}' "
            "WHERE record_seq = (SELECT min(record_seq) FROM source_record WHERE agency = ? "
            "AND person_key NOT IN (SELECT person_key FROM source_record "
            "WHERE research_consent = false))", [A])
        with pytest.raises(InvalidInput) as err:
            _build(registry, _spec(attributes=(_attr(A, "enrolled_on", "date", "other",
                                                            "month"),), demographics=()),
                          project_secret=SECRET, now=NOW)
        text = str(err.value) + repr(err.value.problems)
        assert f"{A}.enrolled_on" in text and "SECRET-VALUE" not in text
    finally:
        registry.close()


def test_bad_specs_are_refused_with_each_field_named() -> None:
    bad = _spec(kind="table", k=0, demographics=("nope",), attributes=(
        _attr(A, "x", "date", "quasi_identifier", "zip3"),
        _attr(A, "x", "string", "secret", "none")), cohort=CohortSpec(agency=""))
    with pytest.raises(InvalidInput) as err:
        check_spec(bad)
    fields = {p.field for p in err.value.problems}
    assert {"kind", "k", "demographics", "attributes.generalization", "attributes.klass",
            "attributes", "cohort.agency"} <= fields
    with pytest.raises(InvalidInput):
        check_spec(_spec(kind="aggregate"))  # no dimensions


# ---- aggregate ----------------------------------------------------------------------------------
def test_aggregate_counts_persons_per_cell_and_suppresses_small_cells(reg: Registry) -> None:
    dims = (f"{A}.race_ethnicity", f"{B}.program")
    out = _build(reg, _spec(kind="aggregate", dimensions=dims, threshold=11),
                        project_secret=SECRET, now=NOW)
    cells = _data(out).to_pylist()
    assert cells and {"count", "suppressed", *dims} <= set(cells[0])
    published = [c for c in cells if not c["suppressed"]]
    assert published and all(c["count"] >= 11 for c in published)
    assert all(c["count"] is None for c in cells if c["suppressed"])
    assert any(c["suppressed"] for c in cells)
    # a published cell equals a brute-force count of persons over the registry
    persons = set(out.person_keys)
    rows = _sql(reg, "SELECT person_key, agency, json_extract_string(attributes, "
                     "'$.race_ethnicity'), json_extract_string(attributes, '$.program') "
                     "FROM source_record WHERE status = 'active'")
    race = {(k, r) for k, ag, r, _p in rows if ag == A and k in persons}
    prog = {(k, p) for k, ag, _r, p in rows if ag == B and k in persons}
    for c in published[:5]:
        want_r, want_p = c[dims[0]], c[dims[1]]
        n = len({k for k in persons if (want_r is None and not any(x[0] == k for x in race)
                                        or (k, want_r) in race)
                 and (want_p is None and not any(x[0] == k for x in prog)
                      or (k, want_p) in prog)})
        assert c["count"] == n, c
    margins = json.loads(out.files["margins.json"])
    assert margins and out.disclosure_report["aggregate"]["unit"] == "persons"
    # the linkage-quality breakdown of an aggregate holds rates, never counts
    groups = out.linkage_quality["by_group"][f"{A}.race_ethnicity"]
    assert any(not g["suppressed"] for g in groups)
    for g in groups:
        assert not {"records", "persons", "linked_records"} & set(g)
        assert not {"pairs", "match_pairs"} & set(g.get("labels", {}))
    assert "k_anonymity" not in out.disclosure_report


def test_an_aggregate_over_a_tiny_cohort_withholds_small_counts_everywhere(reg: Registry) -> None:
    start = dt.date(2016, 3, 1)
    end = start
    while True:  # widen the window until it holds a handful of cohort persons
        n = _sql(reg, "SELECT count(DISTINCT person_key) FROM source_record WHERE agency = ? AND "
                      "CAST(json_extract_string(attributes, '$.enrolled_on') AS DATE) "
                      "BETWEEN ? AND ?", [A, start, end])[0][0]
        if n >= 3:
            break
        end += dt.timedelta(days=1)
    assert n < 11
    spec = _spec(kind="aggregate", dimensions=(f"{A}.program",),
                 cohort=CohortSpec(agency=A, attribute="enrolled_on", start=start, end=end))
    out = _build(reg, spec, project_secret=SECRET, now=NOW)
    rep = out.disclosure_report
    assert rep["cohort"]["persons"] is None and rep["released"]["persons"] is None
    assert rep["aggregate"]["persons"] is None and "small_counts" in rep
    assert all(v["values_generalized"] is None or v["values_generalized"] == 0
               for v in rep["generalization"].values())
    assert "records" not in out.linkage_quality["overall"]
    cells = _data(out).to_pylist()
    assert cells and all(c["suppressed"] or c["count"] == 0 for c in cells)
    assert any(c["suppressed"] for c in cells)  # the cohort's persons sit in withheld cells
    assert 0 < len(out.person_keys) < 11  # still accounted as disclosures


# ---- linkage quality ----------------------------------------------------------------------------
def test_linkage_quality_report_shape_and_sanity(reg: Registry, built: BuiltExtract) -> None:
    lq = built.linkage_quality
    assert json.loads(built.files["linkage_quality.json"]) == json.loads(json.dumps(lq))
    assert lq["model"]["version"] == reg.model.version
    assert lq["model"]["thresholds"] == {"link": reg.model.thresholds.link,
                                         "review": reg.model.thresholds.review}
    assert set(lq["estimators"]) >= {"link_probability", "model_false_match_rate",
                                     "model_missed_match_rate", "label_false_match_rate"}
    overall = lq["overall"]
    assert overall["records"] == built.rows
    assert overall["linked_records"] + overall["singleton_records"] == built.rows
    assert 0.9 < overall["mean_link_probability"] <= 1.0
    assert 0.0 <= overall["model"]["false_match_rate"] < 0.1
    assert 0.0 <= overall["model"]["missed_match_rate"] < 0.2
    assert overall["labels"]["pairs"] == 0 and overall["labels"]["false_match_rate"] is None
    groups = lq["by_group"][f"{A}.race_ethnicity"]
    shown = [g for g in groups if not g["suppressed"]]
    assert shown and sum(g["records"] for g in shown) <= built.rows
    for g in groups:
        if g["suppressed"]:
            assert set(g) == {"group", "suppressed", "suppression"}
        else:
            assert g["persons"] >= 11 and g["records"] >= g["persons"]
    assert "## How each figure is estimated" in built.files["linkage_quality.md"].decode()


def test_link_probability_is_null_exactly_for_singletons_and_matches_brute_force(
        reg: Registry, built: BuiltExtract) -> None:
    data = _data(built)
    ids = dict(zip(pseudonymize(built.person_keys, SECRET).to_pylist(), built.person_keys,
                   strict=True))
    sizes = dict(_sql(reg, "SELECT person_key, count(*) FROM source_record WHERE status = "
                           "'active' GROUP BY person_key"))
    for pid, p in zip(data.column("person_id").to_pylist(),
                      data.column("link_match_probability").to_pylist(), strict=True):
        # null for singletons; issue #16: also where disclosure control suppressed it
        assert p is None or sizes[ids[pid]] > 1
        assert p is None or (0.0 <= p <= 1.0 and round(p, 3) == p)  # at most 3 decimals
    levels = built.disclosure_report["k_anonymity"]["generalization_levels"]
    if set(levels["link_match_probability"]["rows_per_level"]) == {"3_decimals"}:
        for pid, p in zip(data.column("person_id").to_pylist(),
                          data.column("link_match_probability").to_pylist(), strict=True):
            assert (p is None) == (sizes[ids[pid]] == 1)
    # the vectorized estimators against a plain loop over every record of the extract
    idx, scorer = reg.index, reg.scorer
    rows = np.flatnonzero(idx.active[: idx.n])[:400]
    link, _ = quality.link_probabilities(idx, scorer, rows)
    missed, same, _ = quality.missed_probabilities(idx, scorer, rows)
    assert np.array_equal(missed, same)  # no calibration: calibrated equals raw
    live = np.flatnonzero(idx.active[: idx.n])
    for i, r in enumerate(rows.tolist()):
        mates = [m for m in live.tolist() if idx.label[m] == idx.label[r] and m != r]
        w = [float(scorer.weights(idx.gather(np.array([r])), idx.gather(np.array([m])))[0])
             for m in mates]
        want = probability(max(w)) if w else None
        assert (want is None and np.isnan(link[i])) or link[i] == pytest.approx(want, abs=1e-12)
        q, cand = idx.query(idx.gather(np.array([r])))
        best: dict[int, float] = {}
        for c in cand.tolist():
            if idx.label[c] != idx.label[r]:
                p = probability(float(scorer.weights(idx.gather(np.array([r])),
                                                     idx.gather(np.array([c])))[0]))
                best[int(idx.label[c])] = max(best.get(int(idx.label[c]), 0.0), p)
        assert missed[i] == pytest.approx(min(1.0, sum(best.values())), abs=1e-12)


def test_label_rates_count_planted_labels(tmp_path: Path) -> None:
    registry = Registry(Settings(data_dir=tmp_path / "d"))
    try:
        _enrol(registry, people=200, seed=8)
        rows = _sql(registry, "SELECT record_seq, person_key, agency FROM source_record "
                              "WHERE status = 'active' AND person_key NOT IN (SELECT person_key "
                              "FROM source_record WHERE research_consent = false) "
                              "ORDER BY record_seq")
        by_person: dict[str, list[int]] = {}
        for seq, key, _ag in rows:
            by_person.setdefault(key, []).append(seq)
        pairs_same = [v[:2] for v in by_person.values() if len(v) >= 2][:3]
        singles = [v[0] for v in by_person.values() if len(v) == 1][:2]
        assert len(pairs_same) == 3 and len(singles) == 2
        labels = [
            {"record_seq_a": pairs_same[0][0], "record_seq_b": pairs_same[0][1], "is_match": True},
            {"record_seq_a": pairs_same[1][0], "record_seq_b": pairs_same[1][1], "is_match": True},
            {"record_seq_a": pairs_same[2][0], "record_seq_b": pairs_same[2][1], "is_match": False},
            {"record_seq_a": singles[0], "record_seq_b": singles[1], "is_match": True},
        ]
        with registry.store.transaction() as cur:
            lstore.insert_labels(cur, labels, principal_id="steward", source="import", now=NOW)
        spec = _spec(attributes=(_attr(A, "program", "string", "other", "none"),
                                 _attr(B, "program", "string", "other", "none"),
                                 _attr(C, "program", "string", "other", "none")),
                     cohort=CohortSpec(agency=A), k=1, demographics=())
        # the extract's rows: every active record of the persons with a record at A
        cohort = {key for _s, key, ag in rows if ag == A}
        extract_seqs = {s for s, key, _ag in rows if key in cohort}
        inside = [lab for lab in labels
                  if lab["record_seq_a"] in extract_seqs or lab["record_seq_b"] in extract_seqs]
        out = _build(registry, spec, project_secret=SECRET, now=NOW)
        got = out.linkage_quality["overall"]["labels"]
        same = {tuple(p) for p in pairs_same}
        linked = [lab for lab in inside if (lab["record_seq_a"], lab["record_seq_b"]) in same]
        want_false = sum(1 for lab in linked if not lab["is_match"])
        matches = [lab for lab in inside if lab["is_match"]]
        want_missed = sum(1 for lab in matches
                          if (lab["record_seq_a"], lab["record_seq_b"]) not in same)
        assert got["pairs"] == len(inside) > 0
        assert got["linked_pairs"] == len(linked) and got["false_matches"] == want_false
        assert got["match_pairs"] == len(matches) and got["missed_matches"] == want_missed
        assert out.linkage_quality["labels_available"]
        low, high = got["missed_match_rate_ci95"]
        assert 0.0 <= low <= got["missed_match_rate"] <= high <= 1.0
        # every active label calibrates the model; a linked pair labelled different persons
        # makes the calibrated false-match rate exceed the model's own
        bins = out.linkage_quality["calibration"]["bins"]
        assert sum(b["labelled_pairs"] for b in bins) == len(labels)
        overall = out.linkage_quality["overall"]
        assert overall["calibrated"]["false_match_rate"] > overall["model"]["false_match_rate"]
    finally:
        registry.close()


def test_wilson_interval_known_values() -> None:
    assert quality.wilson_interval(0, 0) is None
    assert quality.wilson_interval(5, 10) == pytest.approx([0.236593, 0.763407], abs=1e-6)
    low, high = quality.wilson_interval(0, 20) or [None, None]
    assert low == 0.0 and high == pytest.approx(0.161125, abs=1e-6)


def test_small_groups_are_suppressed_in_the_breakdown() -> None:
    link = np.array([0.99] * 30 + [np.nan] * 5 + [0.9] * 3)
    missed = np.zeros(38)
    empty = quality.LabelPairs(*(np.empty(0, dtype=np.int64),) * 2,
                               np.empty(0, dtype=bool), np.empty(0, dtype=bool), np.empty(0))
    common: dict[str, Any] = dict(
        record_seqs=np.arange(38, dtype=np.int64), link=link, missed=missed,
        missed_calibrated=missed, cal=quality.calibration(np.empty(0), np.empty(0, dtype=bool)),
        pairs=empty, threshold=11, model_version="m", thresholds={"link": 0.9, "review": 0.5},
        scored={})
    persons = np.arange(38, dtype=np.int64)
    groups = {"g": pa.array(["a"] * 30 + ["b"] * 5 + [None] * 3)}
    rep = quality.build_report(**common, person_codes=persons, groups=groups)
    by = {g["group"]: g for g in rep["by_group"]["g"]}
    assert by["b"]["suppressed"] and by["(missing)"]["suppressed"]
    assert by["a"]["records"] == 30 and by["a"]["model"]["false_match_rate"] == pytest.approx(0.01)
    assert by["a"]["calibrated"]["false_match_rate"] is None  # no labels
    # persons, not records, decide: c has 12 records of 6 persons, b 2 records of 1 person
    lone = quality.build_report(**common, person_codes=persons // 2,
                                groups={"g": pa.array(["a"] * 24 + ["c"] * 12 + ["b"] * 2)})
    hidden = {g["group"]: g.get("suppression") for g in lone["by_group"]["g"] if g["suppressed"]}
    assert hidden == {"b": "small", "c": "small"}
    alone = quality.build_report(**common, person_codes=persons,
                                 groups={"g": pa.array(["a"] * 20 + ["c"] * 15 + ["b"] * 3)})
    hidden = {g["group"]: g.get("suppression") for g in alone["by_group"]["g"] if g["suppressed"]}
    assert hidden == {"b": "small", "c": "complementary"}
    rates = quality.build_report(**common, person_codes=persons, groups=groups, group_counts=False)
    shown = next(g for g in rates["by_group"]["g"] if g["group"] == "a")
    assert "records" not in shown and "pairs" not in shown["labels"]
    assert shown["model"]["false_match_rate"] == pytest.approx(0.01)
    assert "records" not in rates["overall"]


def test_calibration_shrinks_each_bin_towards_the_model() -> None:
    p = np.array([0.2, 0.3, 0.95, 0.995, 0.996, 0.997, 0.99999])
    match = np.array([False, True, True, False, True, True, True])
    cal = quality.calibration(p, match)
    assert cal.available and cal.pairs.tolist() == [0, 0, 2, 0, 1, 3, 0, 1]
    # bin [0.99, 0.999): 2 of 3 matches, mean model p 0.996 -> (2 + 10*0.996) / 13
    assert cal.probability[5] == pytest.approx((2 + 10 * 0.996) / 13)
    assert cal.probability[2] == pytest.approx((1 + 10 * 0.25) / 12)
    out = cal.apply(np.array([0.05, 0.25, 0.9985, 1.0]))
    assert out[0] == 0.05  # a bin without labels keeps the model's probability
    assert out[1] == pytest.approx(cal.probability[2])
    assert out[2] == pytest.approx(cal.probability[5])
    assert out[3] == pytest.approx(cal.probability[7])
    assert not quality.calibration(np.empty(0), np.empty(0, dtype=bool)).available


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 6), max_size=40))
def test_within_pairs_are_exactly_the_pairs_sharing_a_label(labels: list[int]) -> None:
    arr = np.sort(np.array(labels, dtype=np.int64))
    left, right = quality._within_pairs(arr)
    got = sorted(zip(left.tolist(), right.tolist(), strict=True))
    want = [(i, j) for i, j in itertools.combinations(range(len(arr)), 2) if arr[i] == arr[j]]
    assert got == want


def test_an_empty_cohort_builds_empty_files(reg: Registry) -> None:
    out = _build(reg, _spec(cohort=CohortSpec(agency="agency_nobody")),
                        project_secret=SECRET, now=NOW)
    assert out.rows == 0 and out.person_keys == []
    assert _data(out).num_rows == 0 and out.files["data.csv"].startswith(b'"person_id"')
    assert out.linkage_quality["overall"]["records"] == 0
    agg = _build(reg, _spec(cohort=CohortSpec(agency="agency_nobody"), kind="aggregate",
                                   dimensions=(f"{A}.program",)), project_secret=SECRET, now=NOW)
    assert agg.person_keys == []


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.sampled_from(["a", "b"]),
                          st.sampled_from(["x", "y", None]), st.sampled_from(["1", "2"])),
                min_size=1, max_size=80),
       st.integers(1, 4))
def test_person_level_k_anonymity_holds_for_any_table(rows: list[tuple[int, str, str | None, str]],
                                                      k: int) -> None:
    # issue #16 (contract changed): a person at risk first loses their rows at other agencies
    # than the cohort's ("a"), then the whole person; every kept signature is shared by k
    from mpi.extract.recoding import protect_persons
    table = pa.table({"person_id": [f"p{r[0]}" for r in rows], "agency": [r[1] for r in rows],
                      "q1": [r[2] for r in rows], "q2": [r[3] for r in rows]})
    persons = np.unique([r[0] for r in rows], return_inverse=True)[1].astype(np.int64)
    classes = np.unique([repr(r[1:]) for r in rows], return_inverse=True)[1].astype(np.int64)
    cohort = np.asarray([r[1] == "a" for r in rows])
    keep, counts = protect_persons(persons, classes, cohort, k)
    out = table.filter(pa.array(keep))
    sig: dict[str, set[tuple[Any, ...]]] = {}
    for r in out.to_pylist():
        sig.setdefault(r["person_id"], set()).add((r["agency"], r["q1"], r["q2"]))
    shared: dict[frozenset[tuple[Any, ...]], int] = {}
    for p in sig:
        shared[frozenset(sig[p])] = shared.get(frozenset(sig[p]), 0) + 1
    assert all(shared[frozenset(v)] >= k for v in sig.values())
    # a person's cohort row goes only with the whole person
    for r in table.to_pylist():
        if r["agency"] == "a" and r["person_id"] in sig:
            assert (r["agency"], r["q1"], r["q2"]) in sig[r["person_id"]]
    assert counts["rows_removed_other_agencies"] + counts["rows_removed_persons"] == \
        table.num_rows - out.num_rows
    if out.num_rows:
        assert k_anonymity(_qi_frame(out, ["agency", "q1", "q2"]), ["agency", "q1", "q2"]) >= k


@pytest.mark.integration
def test_large_index_lookups_in_sorted_order_return_the_same_pairs() -> None:
    """mpi/linkage/index.py looks up queries of more than 4,096 keys in sorted order (an
    extract queries every cohort record); the pairs must equal the one-by-one lookup's."""
    from mpi.linkage.index import _RuleIndex
    rng = np.random.default_rng(3)
    rule = _RuleIndex()
    stored = rng.integers(0, 3000, 20_000).astype(np.uint64)
    rule.add(stored, np.arange(len(stored), dtype=np.int64))
    queries = rng.integers(0, 3500, 6000).astype(np.uint64)
    q, rows = rule.lookup(queries)
    assert len(queries) > 4096 and len(q) > 10_000
    want = [(i, int(r)) for i, k in enumerate(queries.tolist()) if k
            for r in np.flatnonzero(stored == k).tolist()]
    assert sorted(zip(q.tolist(), rows.tolist(), strict=True)) == sorted(want)


def test_large_persons_use_their_blocked_pairs(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above MAX_PAIRED_PERSON records a person's pairs come from blocking, not all pairs."""
    idx, scorer = reg.index, reg.scorer
    live = np.flatnonzero(idx.active[: idx.n])
    rows = live[:300]
    full, _ = quality.link_probabilities(idx, scorer, rows)
    monkeypatch.setattr(quality, "MAX_PAIRED_PERSON", 1)
    blocked, scored = quality.link_probabilities(idx, scorer, rows)
    assert scored > 0
    for i, r in enumerate(rows.tolist()):
        _q, cand = idx.query(idx.gather(np.array([r])))
        mates = [c for c in cand.tolist() if idx.label[c] == idx.label[r] and c != r]
        w = [float(scorer.weights(idx.gather(np.array([r])), idx.gather(np.array([m])))[0])
             for m in mates]
        if w:
            assert blocked[i] == pytest.approx(probability(max(w)), abs=1e-12)
            assert blocked[i] <= full[i] + 1e-12
        else:
            assert np.isnan(blocked[i])


def test_birth_years_that_could_mean_90_plus_are_pooled_on_the_reference_date(reg: Registry) -> None:
    col = f"{A}.birth_year"
    attrs = (_attr(A, "birth_year", "integer", "quasi_identifier", "none"),
             _attr(A, "program", "string", "sensitive", "none"))
    spec = _spec(attributes=attrs, k=1, demographics=(), reference_date=dt.date(2060, 6, 1))
    out = _build(reg, spec, project_secret=SECRET, now=NOW)
    released = [y for y in _data(out).column(col).to_pylist() if y is not None]
    raw = [int(r[0]) for r in _sql(reg, "SELECT json_extract_string(attributes, '$.birth_year') "
                                        "FROM source_record WHERE status = 'active' AND agency = ? "
                                        "AND person_key IN (SELECT unnest(?))", [A, out.person_keys])
           if r[0] is not None]
    assert sorted(released) == sorted(max(y, 1970) for y in raw)
    pooled = sum(y < 1970 for y in raw)
    assert pooled and out.disclosure_report["birth_years_pooled"]["values_pooled"] == {col: pooled}
    assert out.disclosure_report["birth_years_pooled"]["at_or_before"] == 1970
    entry = next(e for e in json.loads(out.files["dictionary.json"])["columns"] if e["column"] == col)
    assert entry["birth_years_pooled_at_or_before"] == 1970
    # The reference date, not the build time, decides: a later rebuild releases the same years.
    later = _build(reg, spec, project_secret=SECRET, now=NOW + dt.timedelta(days=3650))
    assert later.files["data.parquet"] == out.files["data.parquet"]
    # A date of birth released as a year is pooled the same way; other years are not.
    dates = _spec(attributes=(_attr(A, "enrolled_on", "date", "other", "year"),), k=1,
                  demographics=(), reference_date=dt.date(2060, 6, 1))
    assert _build(reg, dates, project_secret=SECRET, now=NOW).disclosure_report[
        "birth_years_pooled"]["values_pooled"] == {}
