"""The re-identification attacker of issue #16, importable without pytest (the attacker suite
tests/extract/test_reid_attack.py and the benchmark scripts/bench_reid.py share it).

Owns: the attacker. It holds every agency's plaintext attributes and the published hierarchies;
it links each released row back to the plaintext records of its agency compatible with ALL its
released columns, at any generalization level (a null released value constrains nothing; a
date-shifted column is skipped, the attacker does not know the shift), and each released person
through all their rows. A row is re-identified when exactly one plaintext record fits, and
correctly when that record's person is the row's person. Must not: use anything of the
extract's build but its published files and the registry's own record -> person map (the
ground truth the score needs). Also the synthetic world and the requests of the suite.

Rows are grouped by which columns they constrain at which hierarchy level; each group is one
vectorised group-by over the plaintext (exact); a released string that several levels could
have produced falls back to per-row candidate masks (also exact).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mpi.config import Settings
from mpi.extract.build import AttributeSpec, BuiltExtract, CohortSpec, ExtractSpec
from mpi.extract.generalize import generalize, pool_old_birth_years
from mpi.extract.hierarchy import build_hierarchy, release
from mpi.extract.pseudonym import pseudonymize
from mpi.identity.pipeline import demo_secret, tokenize_rows
from mpi.identity.registry import Registry
from mpi.synth import generate


@dataclass
class Attack:
    """What the attacker achieved against one released rows extract."""

    rows: int
    unique_rows: int
    correct_rows: int
    persons: int
    unique_persons: int
    correct_persons: int


@dataclass
class _Column:
    """One released column as the attacker sees it over an agency's plaintext."""

    name: str
    codes: list[npt.NDArray[np.int64]]          # per level: each plaintext record's code
    lookup: dict[str, list[tuple[int, int]]]    # released string -> (level, code) pairs


def released_table(built: BuiltExtract) -> pa.Table:
    """The data file of a build."""
    return pq.read_table(pa.BufferReader(built.files["data.parquet"]))


def _column(plain: Sequence[Mapping[str, Any]], spec_attr: Any, floor_year: int) -> _Column:
    name = spec_attr.name
    raw = pa.table({name: pa.array([None if r.get(name) in (None, "") else str(r.get(name))
                                     for r in plain], pa.string())})
    level0 = generalize(raw, {name: spec_attr.generalization}, types={name: spec_attr.type}).column(0)
    if name == "birth_year":
        level0, _n = pool_old_birth_years(level0, floor_year=floor_year)
    h = build_hierarchy(f"{spec_attr.agency}.{name}", level0, name=name, type=spec_attr.type,
                        generalization=spec_attr.generalization, grouping=spec_attr.hierarchy)
    codes: list[npt.NDArray[np.int64]] = []
    lookup: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for lv in range(len(h.levels)):
        values = release(h, np.full(len(plain), lv, dtype=np.int64)).cast(pa.string())
        enc = pc.dictionary_encode(values)
        idx = np.asarray(enc.indices.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
        codes.append(idx)
        for code, v in enumerate(enc.dictionary.to_pylist()):
            lookup[v].append((lv, code))
    return _Column(f"{spec_attr.agency}.{name}", codes, dict(lookup))


def _resolve(cols: list[_Column], released: dict[str, list[Any]], row: int
             ) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...]] | str | None:
    """A row's constraints as (column, level) pairs and codes; None when a released value fits
    no plaintext record; "ambiguous" when one could come from several levels."""
    shape: list[tuple[int, int]] = []
    key: list[int] = []
    ambiguous = False
    for c, col in enumerate(cols):
        v = released[col.name][row]
        if v is None:
            continue   # missing or suppressed: no constraint
        hits = col.lookup.get(str(v))
        if not hits:
            return None
        if len(hits) > 1:
            ambiguous = True
            continue
        shape.append((c, hits[0][0]))
        key.append(hits[0][1])
    return "ambiguous" if ambiguous else (tuple(shape), tuple(key))


def _row_candidates(cols: list[_Column], released: dict[str, list[Any]], rows: Sequence[int],
                    n_plain: int) -> list[npt.NDArray[np.int64]]:
    """Per row: the indices of the plaintext records compatible with every released column."""
    out: list[npt.NDArray[np.int64]] = [np.zeros(0, np.int64)] * len(rows)
    groups: dict[tuple[tuple[int, int], ...], list[tuple[int, tuple[int, ...]]]] = defaultdict(list)
    masked: list[int] = []
    for i, row in enumerate(rows):
        resolved = _resolve(cols, released, row)
        if isinstance(resolved, str):
            masked.append(i)
        elif resolved is not None:
            groups[resolved[0]].append((i, resolved[1]))
    for shape, members in groups.items():
        if not shape:
            every = np.arange(n_plain, dtype=np.int64)
            for i, _ in members:
                out[i] = every
            continue
        plain_keys = np.stack([cols[c].codes[lv] for c, lv in shape], axis=1)
        order = np.lexsort(plain_keys.T[::-1])
        sorted_keys = plain_keys[order]
        uniq, starts = np.unique(sorted_keys, axis=0, return_index=True)
        ends = np.append(starts[1:], len(sorted_keys))
        where: dict[tuple[int, ...], tuple[int, int]] = {
            tuple(int(x) for x in u): (int(s), int(e))
            for u, s, e in zip(uniq, starts, ends, strict=True)}
        for i, key in members:
            span = where.get(key)
            if span is not None:
                out[i] = order[span[0]:span[1]]
    for i in masked:   # a released string several levels could have produced: exact masks
        mask = np.ones(n_plain, dtype=bool)
        for col in cols:
            v = released[col.name][rows[i]]
            if v is None:
                continue
            hit = np.zeros(n_plain, dtype=bool)
            for lv, code in col.lookup.get(str(v), []):
                hit |= col.codes[lv] == code
            mask &= hit
        out[i] = np.flatnonzero(mask)
    return out


def record_persons(reg: Any) -> dict[str, str]:
    """``agency/source_record_id`` -> person key, from an open registry (the truth)."""
    return {str(k): str(p) for k, p in reg.store.cursor().execute(
        "SELECT agency || '/' || source_record_id, person_key FROM source_record").fetchall()}


def attack(plain: Mapping[str, Sequence[Mapping[str, Any]]], record_persons: Mapping[str, str],
           built: BuiltExtract, spec: ExtractSpec, *, secret: bytes, now: dt.datetime,
           person_cap: int | None = None) -> Attack:
    """Link every released row (and person) of ``built`` back to ``plain`` (agency -> plaintext
    records with ``source_record_id``); ``record_persons``: ``agency/source_record_id`` ->
    person key (the truth); ``person_cap``: rows with more candidates than this do not narrow a
    person (None: every row does; a cap makes the person figures a lower bound)."""
    data = released_table(built)
    shifted = set(built.disclosure_report["date_shift"]["columns"])
    floor_year = now.year - 90
    keys = list(record_persons)
    pid = dict(zip(keys, pseudonymize([record_persons[k] for k in keys], secret).to_pylist(),
                   strict=True))
    person_col = data.column("person_id").to_pylist()
    agency_col = data.column("agency").to_pylist()
    released = {c: data.column(c).cast(pa.string()).to_pylist() for c in data.column_names
                if c not in ("person_id", "agency")}
    unique = correct = 0
    per_person: dict[str, set[str | None] | None] = {}
    for agency in sorted({a.agency for a in spec.attributes} | {spec.cohort.agency}):
        records = plain[agency]
        ids = [f"{agency}/{r['source_record_id']}" for r in records]
        cols = [_column(records, a, floor_year) for a in spec.attributes
                if a.agency == agency and f"{a.agency}.{a.name}" in data.column_names
                and f"{a.agency}.{a.name}" not in shifted]
        rows = [i for i, a in enumerate(agency_col) if a == agency]
        for row, hits in zip(rows, _row_candidates(cols, released, rows, len(records)),
                             strict=True):
            if len(hits) == 1:
                unique += 1
                correct += pid.get(ids[int(hits[0])]) == person_col[row]
            if person_cap is not None and len(hits) > person_cap:
                per_person.setdefault(person_col[row], None)
                continue
            owners = {pid.get(ids[int(j)]) for j in hits}
            seen = per_person.get(person_col[row])
            per_person[person_col[row]] = owners if seen is None else seen & owners
    u_persons = sum(1 for s in per_person.values() if s is not None and len(s) == 1)
    c_persons = sum(1 for p, s in per_person.items() if s == {p})
    return Attack(data.num_rows, unique, correct, len(per_person), u_persons, c_persons)


# ---- the synthetic world and the requests of the attacker suite ---------------------------------
NOW = dt.datetime(2026, 3, 1, 12, 0)
A, B, C = "agency_a", "agency_b", "agency_c"
ATTRS = ("race_ethnicity", "birth_year", "program", "enrolled_on", "postal_code")
TYPES = {"race_ethnicity": "string", "birth_year": "integer", "program": "string",
         "enrolled_on": "date", "postal_code": "string"}
SECRET = bytes(range(32))



@dataclass
class World:
    """A registry over synthetic people and the attacker's plaintext."""

    reg: Registry
    plain: dict[str, list[dict[str, Any]]]


def synthetic_world(tmp: Path, people: int, seed: int) -> World:
    """A registry under ``tmp`` over ``people`` synthetic people at three agencies, and the
    plaintext the attacker holds."""
    reg = Registry(Settings(data_dir=tmp / "data"))
    rows, _truth = generate(people=people, agencies=3, seed=seed)
    for agency, plain in rows.items():
        recs, _rejected = tokenize_rows(plain, secret=demo_secret(1), attributes=ATTRS)
        res = reg.enrol_records(agency, list(enumerate(recs, start=1)))
        if res.problems:
            raise RuntimeError(f"{len(res.problems)} synthetic records were refused")
    return World(reg, rows)


def _attr(agency: str, name: str, klass: str, gen: str, **kw: Any) -> AttributeSpec:
    """One requested attribute of the attack's dataset."""
    return AttributeSpec(agency=agency, dataset="services", name=name, type=TYPES[name],
                         klass=klass, description=name, generalization=gen, **kw)


# The requests: the (unmarked program and enrolment month), a mislabelled dictionary
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


def request_spec(name: str) -> ExtractSpec:
    """The rows extract of one of REQUESTS, cohort agency A."""
    return ExtractSpec(extract_id=f"x_{name}", title=name, kind="rows",
                       cohort=CohortSpec(agency=A), **REQUESTS[name])
