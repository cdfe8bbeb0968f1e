"""k-anonymity over released quasi-identifiers: further generalization along ladders, then suppression.

Owns: equivalence classes over quasi-identifier columns (null counts as a value), the one-step
coarsenings a ladder may name, ``enforce_k_anonymity`` and its ``KReport``. Must not: run SQL,
read the registry, or report values (the report holds counts and generalization names only).

Method: while some records sit in classes smaller than k, try each quasi-identifier's next
ladder steps (one or more steps deep) on the whole column and keep the single change that
leaves the fewest records in small classes, if it leaves strictly fewer; then suppress (drop)
every record still in a class smaller than k. Ladder steps act on the released form of a column:
``month`` ("YYYY-MM" from a date), ``year`` ("YYYY" from a date or "YYYY-MM"; an integer year is
kept), ``age_band_5``/``age_band_10`` (bands from whole-year ages or "NN"/"90+" strings; "90+"
stays), ``zip3`` (from a 5-digit ZIP) and ``suppress`` (the column becomes all null).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from mpi.errors import InvalidInput
from mpi.extract.generalize import age_band_5, zip3

LADDER_STEPS = ("month", "year", "age_band_5", "age_band_10", "zip3", "suppress")


@dataclass
class KReport:
    """What k-anonymity enforcement did: counts only, never values."""

    k: int
    quasi_identifiers: list[str]
    records_in: int
    records_out: int
    records_suppressed: int
    classes: int                   # equivalence classes among the released records
    smallest_class: int | None     # None when no record is released
    generalized_further: dict[str, str] = field(default_factory=dict)   # column -> last step


def _array(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def class_ids(columns: Sequence[pa.Array | pa.ChunkedArray], rows: int) -> npt.NDArray[np.int64]:
    """Dense equivalence-class id per row over the columns (equal values, nulls equal)."""
    codes = np.zeros(rows, dtype=np.int64)
    for col in columns:
        enc = pc.dictionary_encode(_array(col), null_encoding="encode")
        idx = np.asarray(enc.indices.cast(pa.int64()))
        combined = codes * max(len(enc.dictionary), 1) + idx
        codes = np.unique(combined, return_inverse=True)[1].astype(np.int64).reshape(-1)
    return codes


def class_sizes(columns: Sequence[pa.Array | pa.ChunkedArray], rows: int) -> npt.NDArray[np.int64]:
    """For each row, the number of rows in its equivalence class."""
    ids = class_ids(columns, rows)
    return np.bincount(ids)[ids] if rows else np.zeros(0, dtype=np.int64)


def _age_band(name: str, values: pa.Array, width: int) -> pa.Array:
    t = values.type
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return age_band_5(name, values, width=width)
    if not pa.types.is_string(t):
        raise InvalidInput(f"attribute {name!r}: age bands need ages")
    text = values
    top = pc.equal(text, "90+")
    whole = pc.match_substring_regex(text, r"^\d{1,3}$")
    band = pc.extract_regex(text, r"^(?P<low>\d{1,3})-\d{1,3}$")
    ages = pc.if_else(whole, text, pc.struct_field(band, "low")).cast(pa.int64())
    bad = pc.and_(pc.is_valid(text), pc.invert(pc.or_(top, pc.is_valid(ages)).fill_null(False)))
    if pc.any(bad).as_py():
        raise InvalidInput(f"attribute {name!r}: age bands need ages, 'NN' or '90+' values")
    return pc.if_else(top, "90+", age_band_5(name, ages, width=width))


def _prefix(name: str, values: pa.Array, length: int, step: str) -> pa.Array:
    t = values.type
    if pa.types.is_integer(t) and step == "year":
        return values                                    # an integer year is a year already
    if pa.types.is_date(t) or pa.types.is_timestamp(t):
        return pc.strftime(values, format="%Y-%m" if step == "month" else "%Y")
    if pa.types.is_string(t):
        ok = pc.match_substring_regex(values, r"^\d{4}(-\d{2}(-\d{2})?)?$")
        if not pc.all(ok.fill_null(True)).as_py():
            raise InvalidInput(f"attribute {name!r}: {step} needs dates, 'YYYY-MM' or 'YYYY' values")
        return pc.utf8_slice_codeunits(values, 0, length)
    raise InvalidInput(f"attribute {name!r}: {step} needs dates")


def coarsen(name: str, values: pa.Array | pa.ChunkedArray, step: str) -> pa.Array:
    """One ladder step applied to a released column (see the module docstring)."""
    arr = _array(values)
    if step == "month":
        return _prefix(name, arr, 7, step)
    if step == "year":
        return _prefix(name, arr, 4, step)
    if step in ("age_band_5", "age_band_10"):
        return _age_band(name, arr, 5 if step == "age_band_5" else 10)
    if step == "zip3":
        return arr if pa.types.is_string(arr.type) and pc.all(
            pc.less_equal(pc.utf8_length(arr), 3).fill_null(True)).as_py() else zip3(name, arr)
    if step == "suppress":
        return pa.nulls(len(arr), arr.type)
    raise InvalidInput(f"attribute {name!r}: unknown ladder step {step!r}; use one of "
                       f"{', '.join(LADDER_STEPS)}")


def _small(columns: Mapping[str, pa.Array], qis: Sequence[str], rows: int, k: int) -> int:
    return int(np.count_nonzero(class_sizes([columns[q] for q in qis], rows) < k))


def enforce_k_anonymity(table: pa.Table, quasi_identifiers: Sequence[str], *, k: int = 5,
                        ladders: Mapping[str, Sequence[str]] | None = None) -> tuple[pa.Table, KReport]:
    """Generalize along ladders where that suppresses fewer records, then drop classes under k."""
    if not isinstance(k, int) or k < 1:
        raise InvalidInput("k must be a positive integer")
    qis = list(dict.fromkeys(quasi_identifiers))
    for q in [*qis, *(ladders or {})]:
        if q not in table.column_names:
            raise InvalidInput(f"quasi-identifier {q!r} is not in the table")
    for q, steps in (ladders or {}).items():
        for step in steps:
            if step not in LADDER_STEPS:
                raise InvalidInput(f"attribute {q!r}: unknown ladder step {step!r}")
    rows = table.num_rows
    columns = {q: _array(table.column(q)) for q in qis}
    position = dict.fromkeys(qis, 0)
    further: dict[str, str] = {}
    suppressed = _small(columns, qis, rows, k)
    while suppressed:
        best: tuple[int, int, str, pa.Array] | None = None     # (suppressed, depth, column, values)
        for q in qis:
            steps = list((ladders or {}).get(q, ()))[position[q]:]
            candidate = columns[q]
            for depth, step in enumerate(steps, start=1):
                candidate = coarsen(q, candidate, step)
                trial = _small({**columns, q: candidate}, qis, rows, k)
                if trial < suppressed and (best is None or (trial, depth) < best[:2]):
                    best = (trial, depth, q, candidate)
        if best is None:
            break
        suppressed, depth, q, values = best
        ladder = list((ladders or {})[q])
        further[q] = ladder[position[q] + depth - 1]
        position[q] += depth
        columns[q] = values
    out = table
    for q in further:
        out = out.set_column(out.column_names.index(q), q, columns[q])
    sizes = class_sizes([columns[q] for q in qis], rows)
    keep = sizes >= k
    out = out.filter(pa.array(keep))
    kept_ids = class_ids([columns[q].filter(pa.array(keep)) for q in qis], out.num_rows)
    kept_sizes = np.bincount(kept_ids) if out.num_rows else np.zeros(0, dtype=np.int64)
    report = KReport(k=k, quasi_identifiers=qis, records_in=rows, records_out=out.num_rows,
                     records_suppressed=rows - out.num_rows, classes=len(kept_sizes),
                     smallest_class=int(kept_sizes.min()) if len(kept_sizes) else None,
                     generalized_further=further)
    return out, report
