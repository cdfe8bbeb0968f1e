"""Building a research extract: cohort, consent, pseudonyms, generalization, k-anonymity or
aggregate tables, linkage quality, and the data files (issue #5 §3).

Owns: the ``ExtractSpec`` the build runs from and ``build_extract``, which reads one consistent
state of the registry (rows through mpi/store/extracts_read.py and the in-memory index under the
registry's write lock), applies the disclosure library (pseudonym, generalize, kanon, aggregate)
and turns the result into the package's files (mpi/extract/files.py makes the bytes). Must not:
run SQL, store anything, zip or sign (the workflow does), or put a token, person key, source
record id, record number or key id into any file.

Shape of a row extract: one row per active record of a cohort person at a requested agency,
columns ``person_id`` (project pseudonym), ``agency``, one ``<agency>.<attribute>`` column per
released attribute (null on other agencies' rows) and ``link_match_probability``.
k-anonymity holds at two levels: first on rows (``enforce_k_anonymity`` over the quasi-
identifiers and ``agency``, generalizing further along a ladder where that suppresses fewer
rows), then on persons: a person's signature is the set of their rows' quasi-identifier tuples,
and persons whose signature fewer than k persons share are suppressed whole. Persons with equal
signatures hold the same tuples, so every released row's class has at least k persons.
An aggregate extract counts persons per cell of the dimensions (a person with several values of
a dimension counts once in each); cells go through ``aggregate`` (primary and complementary
suppression, LP-audited).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mpi.errors import InvalidInput, Problem
from mpi.extract import quality
from mpi.extract.aggregate import aggregate
from mpi.extract.files import (
    AGENCY,
    LINK_PROBABILITY,
    PERSON_ID,
    csv_bytes,
    data_dictionary,
    dictionary_markdown,
    json_bytes,
    parquet_bytes,
    sort_rows,
)
from mpi.extract.generalize import (
    ATTRIBUTE_CLASSES,
    TOP_CODE_AGE,
    check_generalization,
    generalize,
    is_birth_attribute,
    pool_old_birth_years,
)
from mpi.extract.kanon import KReport, class_ids, enforce_k_anonymity
from mpi.extract.pseudonym import DEFAULT_MAX_SHIFT_DAYS, date_shift_days, pseudonymize
from mpi.store import extracts_read as xread
from mpi.store.labels import active_labels

if TYPE_CHECKING:
    from mpi.identity.registry import Registry

KINDS = ("rows", "aggregate")
LINK_DECIMALS = 3
_SEQ, _KEY, _MISSED, _LINK = "__record_seq", "__person_key", "__missed", "__link"
_MISSED_CAL = "__missed_calibrated"
_SIG = "__signature"
# A quasi-identifier's further steps when k-anonymity asks for them (kanon.LADDER_STEPS), by its
# released form: "<generalization>" or "none:<type>".
LADDERS: Mapping[str, tuple[str, ...]] = {
    "none:date": ("month", "year"), "date_shift": ("month", "year"), "month": ("year",),
    "top_code_90": ("age_band_5", "age_band_10"), "age_band_5": ("age_band_10",),
}


@dataclass(frozen=True)
class AttributeSpec:
    """One released attribute, from an agency's dataset dictionary."""

    agency: str
    dataset: str
    name: str
    type: str
    klass: str          # quasi_identifier | sensitive | other
    description: str
    generalization: str  # the chosen one; already validated against the allowed ones

    @property
    def column(self) -> str:
        """The released column name, ``<agency>.<name>``."""
        return f"{self.agency}.{self.name}"


@dataclass(frozen=True)
class CohortSpec:
    """Persons with an active record at ``agency`` (optionally an attribute date in [start, end])."""

    agency: str
    attribute: str | None = None
    start: dt.date | None = None
    end: dt.date | None = None


@dataclass(frozen=True)
class ExtractSpec:
    """What to build: attributes, cohort, and the disclosure settings."""

    extract_id: str
    title: str
    kind: str  # "rows" | "aggregate"
    attributes: tuple[AttributeSpec, ...]
    cohort: CohortSpec
    k: int = 5
    date_shift: bool = False
    dimensions: tuple[str, ...] = ()  # aggregate only
    threshold: int = 11
    demographics: tuple[str, ...] = ()  # attributes to break linkage quality down by
    # Birth years that could mean an age of 90+ on this date are pooled (default: build date);
    # the workflow passes the request's date so rebuilds release the same values.
    reference_date: dt.date | None = None


@dataclass
class BuiltExtract:
    """The files of one build (not yet zipped or signed) and what it disclosed."""

    files: dict[str, bytes]
    person_keys: list[str]  # persons included (for the accounting of disclosures; never in files)
    rows: int
    disclosure_report: dict[str, Any]
    linkage_quality: dict[str, Any]


# ---- checking the spec ----------------------------------------------------------------------
def _resolve(names: Sequence[str], field: str, columns: Mapping[str, AttributeSpec],
             problems: list[Problem]) -> list[str]:
    """Column names for ``agency.name`` or unambiguous bare names."""
    out: list[str] = []
    for v in names:
        bare = [c for c, a in columns.items() if a.name == v]
        col = v if v in columns else (bare[0] if len(bare) == 1 else None)
        if col is None:
            problems.append(Problem(None, field, f"{str(v)[:64]!r} is not one requested attribute"))
        elif columns[col].generalization == "suppress":
            problems.append(Problem(None, field, f"{col} is suppressed"))
        elif col not in out:
            out.append(col)
    return out


@dataclass(frozen=True)
class _Plan:
    columns: dict[str, AttributeSpec]
    dimensions: list[str]
    demographics: list[str]


def check_spec(spec: ExtractSpec) -> _Plan:
    """Validate a spec (InvalidInput naming each field at fault); the build's column plan."""
    problems: list[Problem] = []
    if spec.kind not in KINDS:
        problems.append(Problem(None, "kind", "rows or aggregate"))
    if not spec.attributes:
        problems.append(Problem(None, "attributes", "at least one attribute"))
    columns: dict[str, AttributeSpec] = {}
    for i, a in enumerate(spec.attributes, start=1):
        if not (a.name.isidentifier() and a.agency):
            problems.append(Problem(i, "attributes.name", "an identifier, with an agency"))
            continue
        if a.klass not in ATTRIBUTE_CLASSES:
            problems.append(Problem(i, "attributes.klass", ", ".join(ATTRIBUTE_CLASSES)))
        try:
            check_generalization(a.column, a.type, a.generalization)
        except InvalidInput as exc:
            problems.append(Problem(i, "attributes.generalization", exc.message))
        if a.column in columns:
            problems.append(Problem(i, "attributes", f"{a.column} requested twice"))
        columns[a.column] = a
    if not spec.cohort.agency:
        problems.append(Problem(None, "cohort.agency", "required"))
    if spec.cohort.attribute is not None and not spec.cohort.attribute.isidentifier():
        problems.append(Problem(None, "cohort.attribute", "an attribute name"))
    if spec.k < 1:
        problems.append(Problem(None, "k", "at least 1"))
    if spec.threshold < 1:
        problems.append(Problem(None, "threshold", "at least 1"))
    dims = _resolve(spec.dimensions, "dimensions", columns, problems)
    if spec.kind == "aggregate" and not spec.dimensions:
        problems.append(Problem(None, "dimensions", "an aggregate needs dimensions"))
    demo = _resolve(spec.demographics, "demographics", columns, problems)
    if problems:
        raise InvalidInput("the extract specification is invalid", problems=problems)
    return _Plan(columns, dims, demo)


# ---- reading ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Snapshot:
    table: pa.Table  # record_seq, person_key, agency, attribute columns, link p, missed p
    counts: dict[str, int]
    pairs: quality.LabelPairs
    cal: quality.Calibration
    scored: dict[str, int]


def _read(reg: Registry, spec: ExtractSpec, plan: _Plan) -> _Snapshot:
    """Rows, counts, labels and link evidence from one state (snapshots taken under the
    registry's write lock)."""
    cohort = xread.CohortFilter(
        agency=spec.cohort.agency,
        json_path=None if spec.cohort.attribute is None else f"$.{spec.cohort.attribute}",
        start=spec.cohort.start, end=spec.cohort.end)
    agencies = sorted({a.agency for a in plan.columns.values()})
    paths = [(a.agency, f"$.{a.name}") for a in plan.columns.values()]
    # One state, without stopping writers for the whole read: they wait only while the
    # journal is folded, DuckDB's snapshot is pinned and the index is snapshotted
    # (milliseconds); the reads and the scoring (seconds at 1M records) run after.
    with reg.store.read_snapshot(lambda: (reg.index.snapshot(), reg.scorer)) as (cur, taken):
        index, scorer = taken
        counts = xread.cohort_counts(cur, cohort=cohort)
        raw = xread.extract_rows(cur, cohort=cohort, agencies=agencies, columns=paths)
        labels = active_labels(cur)
    seqs = np.asarray(raw.column("record_seq").to_numpy(), dtype=np.int64)
    rows = quality.active_rows(index, seqs)
    if (rows < 0).any():  # the store and the in-memory state disagree: never expected
        raise RuntimeError("registry state is inconsistent: an active record is not indexed")
    pairs = quality.label_pairs(index, scorer, labels)
    cal = quality.calibration(pairs.probability, pairs.is_match)
    evidence = quality.record_evidence(index, scorer, rows, cal)
    data: dict[str, Any] = {_SEQ: raw.column("record_seq"), _KEY: raw.column("person_key"),
                            AGENCY: raw.column("agency")}
    for i, col in enumerate(plan.columns):
        data[col] = raw.column(f"c{i}")
    # Three decimals: enough to weight or filter links, and no near-unique value per record
    # that two projects' releases could be joined on.
    link = np.round(evidence.link_probability, LINK_DECIMALS)
    data[LINK_PROBABILITY] = pa.array(link, pa.float64(), mask=np.isnan(link))
    data[_LINK] = pa.array(evidence.link_probability, pa.float64())  # unrounded, for the report
    data[_MISSED] = pa.array(evidence.missed_probability, pa.float64())
    data[_MISSED_CAL] = pa.array(evidence.missed_calibrated, pa.float64())
    scored = {"within_person": evidence.within_pairs, "candidates": evidence.candidate_pairs}
    return _Snapshot(pa.table(data), counts, pairs, cal, scored)


# ---- disclosure control -------------------------------------------------------------------------
def _pool_birth_years(table: pa.Table, plan: _Plan, *,
                      floor_year: int) -> tuple[pa.Table, dict[str, int]]:
    """Pool released birth years at or before ``floor_year`` (birth attributes released as a
    year: a date under ``year``, or an integer year under ``none``/``year``)."""
    pooled: dict[str, int] = {}
    for c, a in plan.columns.items():
        year_form = a.generalization == "year" or (a.type == "integer" and a.generalization == "none")
        if c not in table.column_names or not year_form or not is_birth_attribute(a.name):
            continue
        col, n = pool_old_birth_years(table.column(c), floor_year=floor_year)
        table = table.set_column(table.column_names.index(c), c, col)
        pooled[c] = n
    return table, pooled


def _shifted_columns(spec: ExtractSpec, plan: _Plan) -> list[str]:
    """Date columns shifted per person: all released dates when ``spec.date_shift``, else
    those whose generalization is ``date_shift``."""
    return [c for c, a in plan.columns.items() if a.type == "date" and (
        a.generalization == "date_shift" or (spec.date_shift and a.generalization != "suppress"))]


def _generalized(table: pa.Table, plan: _Plan, *, shifted: Sequence[str],
                 shift: pa.Array | None) -> pa.Table:
    """Replace raw attribute columns by their generalized form (suppressed ones dropped).

    Shifted date columns are shifted first and then take their own generalization (a month
    or year of the shifted date; ``date_shift`` alone keeps the shifted day).
    """
    if shifted:
        moved = generalize(table.select(list(shifted)), dict.fromkeys(shifted, "date_shift"),
                           shift_days=shift, types=dict.fromkeys(shifted, "date"))
        for c in shifted:
            table = table.set_column(table.column_names.index(c), c, moved.column(c))
    gen = {c: "none" if c in shifted and a.generalization == "date_shift" else a.generalization
           for c, a in plan.columns.items()}
    types = {c: a.type for c, a in plan.columns.items()}
    out = generalize(table.select(list(gen)), gen, types=types)
    base = table.drop_columns(list(gen))
    for name in out.column_names:
        base = base.append_column(name, out.column(name))
    return base


def _ladders(plan: _Plan, released: Sequence[str]) -> dict[str, list[str]]:
    """Further generalization steps for each released quasi-identifier."""
    out: dict[str, list[str]] = {}
    for col in released:
        a = plan.columns[col]
        key = f"none:{a.type}" if a.generalization == "none" else a.generalization
        steps = LADDERS.get(key, ())
        if steps:
            out[col] = list(steps)
    return out


def _person_k(table: pa.Table, qis: Sequence[str], k: int) -> tuple[pa.Table, KReport]:
    """Suppress whole persons whose set of quasi-identifier tuples fewer than k persons share."""
    tuples = class_ids([table.column(q) for q in qis], table.num_rows)
    keyed = pa.table({PERSON_ID: table.column(PERSON_ID), "t": pa.array(tuples, pa.int64())})
    distinct = keyed.group_by([PERSON_ID, "t"], use_threads=False).aggregate([])
    distinct = distinct.sort_by([(PERSON_ID, "ascending"), ("t", "ascending")])
    sig = distinct.group_by(PERSON_ID, use_threads=False).aggregate([("t", "list")])
    text = pc.cast(sig.column("t_list"), pa.list_(pa.string()))
    persons = pa.table({PERSON_ID: sig.column(PERSON_ID), _SIG: pc.binary_join(text, ",")})
    kept, report = enforce_k_anonymity(persons, [_SIG], k=k)
    mask = pc.is_in(table.column(PERSON_ID), value_set=kept.column(PERSON_ID))
    return table.filter(mask), report


def _k_report_dict(r: KReport) -> dict[str, Any]:
    d = dataclasses.asdict(r)
    d["quasi_identifiers"] = list(d["quasi_identifiers"])
    return d


# ---- the build ----------------------------------------------------------------------------------
MULTIPLE_GROUP = "(multiple)"


def _person_groups(table: pa.Table, columns: Sequence[str]) -> pa.Table:
    """``table`` with ``__group:<column>`` per demographic: the person's one value of it on any
    of their rows ("(multiple)" when they have several, null when none). Row order changes."""
    out = table
    for col in columns:
        per = table.select([PERSON_ID, col]).group_by(PERSON_ID, use_threads=False).aggregate(
            [(col, "count_distinct"), (col, "min")])
        n = per.column(f"{col}_count_distinct")
        value = pc.if_else(pc.equal(n, 1), pc.cast(per.column(f"{col}_min"), pa.string()),
                           pc.if_else(pc.greater(n, 1), pa.scalar(MULTIPLE_GROUP),
                                      pa.scalar(None, pa.string())))
        groups = pa.table({PERSON_ID: per.column(PERSON_ID), f"__group:{col}": value})
        out = out.join(groups, PERSON_ID, join_type="left outer", use_threads=False)
    return out


def _values_generalized(table: pa.Table, plan: _Plan, released: Sequence[str],
                        shifted: Sequence[str],
                        count: Callable[[int], int | None]) -> dict[str, Any]:
    """Per released column: its generalization, whether it is date-shifted and how many
    released values those changed."""
    out: dict[str, Any] = {}
    for col in released:
        gen = plan.columns[col].generalization
        moved = col in shifted
        changed = 0 if gen == "none" and not moved else table.num_rows - table.column(col).null_count
        out[col] = {"generalization": gen, "date_shifted": moved,
                    "values_generalized": count(changed)}
    return out


def _rows_extract(table: pa.Table, spec: ExtractSpec, plan: _Plan,
                  released: list[str]) -> tuple[pa.Table, dict[str, Any]]:
    """k-anonymity on rows, then on persons; returns the released rows (hidden columns kept)."""
    qis = [AGENCY] + [c for c in released if plan.columns[c].klass == "quasi_identifier"]
    step1, rows_k = enforce_k_anonymity(table, qis, k=spec.k, ladders=_ladders(plan, qis[1:]))
    step2, persons_k = _person_k(step1, qis, spec.k)
    suppressed = table.num_rows - step2.num_rows
    further = dict(rows_k.generalized_further)
    report = {
        "k": spec.k, "quasi_identifiers": qis,
        "records_in": table.num_rows, "records_out": step2.num_rows,
        "records_suppressed": suppressed,
        "records_suppressed_row_level": rows_k.records_suppressed,
        "records_suppressed_person_level": step1.num_rows - step2.num_rows,
        "persons_suppressed": persons_k.records_suppressed,
        "generalized_further": further,
        "records_generalized_further": sum(
            step2.num_rows - step2.column(c).null_count for c in further),
        "row_level": _k_report_dict(rows_k), "person_level": _k_report_dict(persons_k),
        "method": "rows: enforce_k_anonymity over agency and the quasi-identifiers, generalizing "
                  "a quasi-identifier one step further where that suppresses fewer records; "
                  "persons: a person's signature is the set of their rows' quasi-identifier "
                  "tuples, and persons whose signature fewer than k persons share are removed "
                  "with all their rows.",
    }
    return step2, report


def _person_cells(table: pa.Table, dims: Sequence[str]) -> pa.Table:
    """One row per person and combination of their values of the dimensions."""
    persons = pa.table({PERSON_ID: pc.unique(table.column(PERSON_ID))})
    out = persons
    for d in dims:
        values = table.select([PERSON_ID, d]).group_by([PERSON_ID, d], use_threads=False).aggregate([])
        present = values.filter(pc.is_valid(values.column(d)))
        out = out.join(present, PERSON_ID, join_type="left outer", use_threads=False)
    return out


def _aggregate_extract(table: pa.Table, spec: ExtractSpec,
                       dims: list[str]) -> tuple[pa.Table, dict[str, bytes], dict[str, Any]]:
    """Cells (dimension columns, count, suppressed), the margins file and the report."""
    cells_in = _person_cells(table, dims)
    result = aggregate(cells_in.select(dims), dims, threshold=spec.threshold)
    margins = {name: sort_rows(m).to_pylist() for name, m in sorted(result.margins.items())}
    persons = int(pc.count_distinct(table.column(PERSON_ID)).as_py())
    small = 0 < persons < spec.threshold
    report = {"dimensions": dims, "threshold": spec.threshold, "unit": "persons",
              "persons": None if small else persons,
              "person_cells": None if small else cells_in.num_rows, **dict(result.report)}
    return sort_rows(result.cells), {"margins.json": json_bytes(margins)}, report


def build_extract(reg: Registry, spec: ExtractSpec, *, project_secret: bytes, now: dt.datetime,
                  progress: Callable[[str], None] | None = None) -> BuiltExtract:
    """Build an extract's files from the registry's current state (deterministic per state,
    spec and secret). Raises InvalidInput for a bad spec or attribute values."""
    say = progress or (lambda _msg: None)
    plan = check_spec(spec)
    say("reading the cohort and scoring its links")
    snap = _read(reg, spec, plan)
    table = snap.table
    keys = table.column(_KEY)
    table = table.add_column(0, PERSON_ID, pseudonymize(keys, project_secret))
    shifted = _shifted_columns(spec, plan)
    shift = date_shift_days(keys, project_secret) if shifted else None
    say("generalizing")
    table = _generalized(table, plan, shifted=shifted, shift=shift)
    floor_year = (spec.reference_date or now.date()).year - TOP_CODE_AGE
    table, pooled = _pool_birth_years(table, plan, floor_year=floor_year)
    released = [c for c in plan.columns if c in table.column_names]
    extra: dict[str, bytes] = {}
    if spec.kind == "rows":
        say("k-anonymity")
        out, control = _rows_extract(table, spec, plan, released)
        quality_rows = out
        person_keys = out.column(_KEY)
        data = sort_rows(out.select([PERSON_ID, AGENCY, *released, LINK_PROBABILITY]))
        further = control["generalized_further"]
    else:
        say("aggregating")
        data, extra, control = _aggregate_extract(table, spec, plan.dimensions)
        quality_rows, person_keys, further = table, table.column(_KEY), {}
    say("linkage quality")
    quality_rows = _person_groups(quality_rows, plan.demographics)
    link = quality_rows.column(_LINK).to_numpy(zero_copy_only=False)
    person_codes = pc.dictionary_encode(quality_rows.column(PERSON_ID)).combine_chunks().indices
    lq = quality.build_report(
        record_seqs=np.asarray(quality_rows.column(_SEQ).to_numpy(), dtype=np.int64),
        person_codes=np.asarray(person_codes.to_numpy(), dtype=np.int64),
        group_counts=spec.kind == "rows",
        link=np.asarray(link, dtype=np.float64),
        missed=np.asarray(quality_rows.column(_MISSED).to_numpy(), dtype=np.float64),
        missed_calibrated=np.asarray(quality_rows.column(_MISSED_CAL).to_numpy(),
                                     dtype=np.float64),
        cal=snap.cal,
        pairs=snap.pairs,
        groups={d: quality_rows.column(f"__group:{d}") for d in plan.demographics},
        threshold=max(spec.threshold, reg.settings.disclosure_threshold),
        model_version=reg.model.version,
        thresholds={"link": reg.model.thresholds.link, "review": reg.model.thresholds.review},
        scored=snap.scored)
    persons = sorted(set(pc.unique(person_keys).to_pylist()))
    # An aggregate publishes no row, so its report withholds counts the cells would suppress.
    hide = spec.kind == "aggregate"

    def count(n: int) -> int | None:
        return None if hide and 0 < n < spec.threshold else n

    disclosure = {
        "extract_id": spec.extract_id, "title": spec.title, "kind": spec.kind,
        "built_at": now.isoformat(),
        "cohort": {"agency": spec.cohort.agency, "attribute": spec.cohort.attribute,
                   "start": spec.cohort.start, "end": spec.cohort.end,
                   "persons": count(snap.counts["cohort_persons"]),
                   "persons_opted_out_excluded": count(snap.counts["opted_out_persons"]),
                   "records_read": count(snap.table.num_rows)},
        "consent": "Persons with research_consent = false on any record naming them (active or "
                   "withdrawn, current version; keys followed through merges and splits) are "
                   "excluded entirely.",
        "pseudonyms": "person_id = 'p_' + base32 of HMAC-SHA256(project secret, person key); "
                      "the secret belongs to this project only.",
        "date_shift": {"applied": bool(shifted), "max_days": DEFAULT_MAX_SHIFT_DAYS,
                       "columns": [c for c in shifted if c in released],
                       "method": "each person's dates move by one whole number of days, uniform "
                                 "in [-max_days, max_days] without 0 (HMAC of the person key "
                                 "under the project secret), before any month or year "
                                 "generalization; intervals within a person are kept"},
        "generalization": _values_generalized(data if spec.kind == "rows" else table, plan,
                                              released, shifted, count=count),
        "birth_years_pooled": {
            "at_or_before": floor_year,
            "rule": f"birth years that could mean an age of {TOP_CODE_AGE} or more on "
                    f"{(spec.reference_date or now.date()).isoformat()} are released as "
                    f"{floor_year} (one category, HIPAA Safe Harbor)",
            "values_pooled": {c: count(n) for c, n in pooled.items()}},
        "suppressed_columns": [c for c in plan.columns if c not in released],
        ("k_anonymity" if spec.kind == "rows" else "aggregate"): control,
        "released": {"rows": data.num_rows, "persons": count(len(persons))},
    }
    if hide:
        disclosure["small_counts"] = (f"counts from 1 to {spec.threshold - 1} are withheld "
                                      "(null), as in the tables")
    say("writing files")
    entries = data_dictionary(data, plan.columns, further, shifted=shifted)
    for e in entries:
        if e["column"] in pooled:
            e["birth_years_pooled_at_or_before"] = floor_year
    files = {
        "data.parquet": parquet_bytes(data), "data.csv": csv_bytes(data),
        "dictionary.json": json_bytes({"extract_id": spec.extract_id, "title": spec.title,
                                  "kind": spec.kind, "columns": entries}),
        "dictionary.md": dictionary_markdown(spec, entries).encode(),
        "disclosure_report.json": json_bytes(disclosure),
        "linkage_quality.json": json_bytes(lq),
        "linkage_quality.md": quality.report_markdown(lq, title=spec.title).encode(),
        **extra,
    }
    return BuiltExtract(files=files, person_keys=persons, rows=data.num_rows,
                        disclosure_report=disclosure, linkage_quality=lq)
