"""Building a research extract: cohort, consent, pseudonyms, generalization, k-anonymity or
aggregate tables, linkage quality, and the data files (issue #5 §3).

Owns: the ``ExtractSpec`` the build runs from and ``build_extract``, which reads one consistent
state of the registry (rows through mpi/store/extracts_read.py and the in-memory index under the
registry's write lock), applies the disclosure library (pseudonym, generalize, protect, aggregate)
and turns the result into the package's files (mpi/extract/files.py makes the bytes). Must not:
run SQL, store anything, zip or sign (the workflow does), or put a token, person key, source
record id, record number or key id into any file.

Shape of a row extract: one row per active record of a cohort person at a requested agency,
columns ``person_id`` (project pseudonym), ``agency``, one ``<agency>.<attribute>`` column per
released attribute (null on other agencies' rows) and ``link_match_probability``.
Disclosure control (issue #16, mpi/extract/protect.py): every released column but the
pseudonym is a quasi-identifier unless signed off; hierarchies, global and local recoding and
suppression give every class at least k rows and l-diverse sensitive columns; then on persons:
a person's signature is the set of their rows' classes, and a person whose signature fewer than
k persons share loses their other agencies' rows first, then all rows. Persons with equal
signatures hold the same tuples, so every released row's class has at least k persons.
An aggregate extract counts persons per cell of the dimensions (a person with several values of
a dimension counts once in each); cells go through ``aggregate`` (primary and complementary
suppression, LP-audited).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Collection, Mapping, Sequence
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
from mpi.extract.linked_tables import PublishedTable, population_id
from mpi.extract.protect import protect_rows
from mpi.extract.pseudonym import DEFAULT_MAX_SHIFT_DAYS, date_shift_days, pseudonymize
from mpi.extract.recoding import Policy
from mpi.store import extracts_read as xread
from mpi.store.labels import active_labels

if TYPE_CHECKING:
    from mpi.identity.registry import Registry

KINDS = ("rows", "aggregate")
LINK_DECIMALS = 3
_SEQ, _KEY, _MISSED, _LINK = "__record_seq", "__person_key", "__missed", "__link"
_MISSED_CAL = "__missed_calibrated"


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
    # issue #16: a steward's sign-off that the attribute is not identifying (then it is not a
    # quasi-identifier), and the dictionary's grouping maps for a categorical attribute
    non_identifying_signed_off_by: str | None = None
    hierarchy: Any = None

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
    # issue #16: l-diversity of sensitive attributes, the global suppression budget and the
    # request's maximum prosecutor risk (default 1/k; Decision 94) of mpi/extract/protect.py
    l: int = 2  # noqa: E741
    l_entropy: bool = False
    max_suppression: float = 0.05
    risk_threshold: float | None = None


@dataclass
class BuiltExtract:
    """The files of one build (not yet zipped or signed) and what it disclosed."""

    files: dict[str, bytes]
    person_keys: list[str]  # persons included (for the accounting of disclosures; never in files)
    rows: int
    disclosure_report: dict[str, Any]
    linkage_quality: dict[str, Any]
    published: PublishedTable | None = None  # an aggregate's table with true counts (registry only)


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


def _population(reg: Registry, spec: ExtractSpec, plan: _Plan, *, project_secret: bytes,
                floor_year: int) -> pa.Table | None:
    """The cohort agency's consented population in released form (journalist risk), when a
    date window makes the cohort narrower than it; else None (the cohort is the population)."""
    if spec.cohort.attribute is None:
        return None
    whole = dataclasses.replace(spec, cohort=CohortSpec(agency=spec.cohort.agency))
    table = _read(reg, whole, plan).table
    keys = table.column(_KEY)
    table = table.add_column(0, PERSON_ID, pseudonymize(keys, project_secret))
    shifted = _shifted_columns(spec, plan)
    shift = date_shift_days(keys, project_secret) if shifted else None
    table = _generalized(table, plan, shifted=shifted, shift=shift)
    return _pool_birth_years(table, plan, floor_year=floor_year)[0]


def _rows_extract(table: pa.Table, spec: ExtractSpec, plan: _Plan, released: list[str],
                  population: pa.Table | None = None) -> tuple[pa.Table, dict[str, Any]]:
    """Disclosure control over every released column (mpi/extract/protect.py); returns the
    released rows (hidden columns kept) and the report."""
    policy = Policy(k=spec.k, l=spec.l, entropy=spec.l_entropy,
                    max_suppression=spec.max_suppression)
    done = protect_rows(table, plan.columns, released, cohort_agency=spec.cohort.agency,
                        policy=policy, risk_threshold=spec.risk_threshold, population=population)
    return done.table, done.report


def _person_cells(table: pa.Table, dims: Sequence[str]) -> pa.Table:
    """One row per person and combination of their values of the dimensions."""
    persons = pa.table({PERSON_ID: pc.unique(table.column(PERSON_ID))})
    out = persons
    for d in dims:
        values = table.select([PERSON_ID, d]).group_by([PERSON_ID, d], use_threads=False).aggregate([])
        present = values.filter(pc.is_valid(values.column(d)))
        out = out.join(present, PERSON_ID, join_type="left outer", use_threads=False)
    return out


def _aggregate_extract(table: pa.Table, spec: ExtractSpec, dims: list[str],
                       linked: Sequence[PublishedTable] | None = None
                       ) -> tuple[pa.Table, dict[str, bytes], dict[str, Any], PublishedTable | None]:
    """Cells (dimension columns, count, suppressed), the margins file, the report and the
    published table (with ``linked``: protected jointly with those, Decision 77)."""
    cells_in = _person_cells(table, dims)
    result = aggregate(cells_in.select(dims), dims, threshold=spec.threshold, linked=linked,
                       population=population_id(pc.unique(table.column(_KEY)).to_pylist()))
    margins = {name: sort_rows(m).to_pylist() for name, m in sorted(result.margins.items())}
    persons = int(pc.count_distinct(table.column(PERSON_ID)).as_py())
    small = 0 < persons < spec.threshold
    report = {"dimensions": dims, "threshold": spec.threshold, "unit": "persons",
              "persons": None if small else persons,
              "person_cells": None if small else cells_in.num_rows, **dict(result.report)}
    return sort_rows(result.cells), {"margins.json": json_bytes(margins)}, report, result.published


def build_extract(reg: Registry, spec: ExtractSpec, *, project_secret: bytes, now: dt.datetime,
                  progress: Callable[[str], None] | None = None,
                  withhold: Collection[str] = (),
                  linked: Sequence[PublishedTable] | None = None) -> BuiltExtract:
    """Build an extract's files from the registry's current state (deterministic per state,
    spec and secret). Raises InvalidInput for a bad spec or attribute values. ``withhold``:
    person keys left out so that releases do not difference (mpi/extract/differencing.py);
    ``linked``: aggregate tables already released to the researcher (Decision 77)."""
    say = progress or (lambda _msg: None)
    plan = check_spec(spec)
    say("reading the cohort and scoring its links")
    snap = _read(reg, spec, plan)
    table = snap.table
    if withhold:
        table = table.filter(pc.invert(pc.is_in(
            table.column(_KEY), value_set=pa.array(sorted(withhold), pa.string()))))
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
    published: PublishedTable | None = None
    if spec.kind == "rows":
        population = _population(reg, spec, plan, project_secret=project_secret,
                                 floor_year=floor_year)
        say("disclosure control: risk search")
        out, control = _rows_extract(table, spec, plan, released, population)
        quality_rows = out
        person_keys = out.column(_KEY)
        data = sort_rows(out.select([PERSON_ID, AGENCY, *released, LINK_PROBABILITY]))
        further = control["generalized_further"]
    else:
        say("aggregating")
        data, extra, control, published = _aggregate_extract(table, spec, plan.dimensions, linked)
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
                        disclosure_report=disclosure, linkage_quality=lq,
                        published=published)
