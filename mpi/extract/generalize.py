"""Generalization of released attributes: dates to month or year, ages top-coded, ZIP3, date shifts.

Owns: the attribute types and generalization names of the data dictionary, which
generalization applies to which type, the per-attribute defaults of issue #5, the list of
low-population ZIP3s (package data) and ``generalize``, which turns raw attribute columns into
released columns. Must not: run SQL, read the registry, or put a value into an error message
(errors name the attribute, the row position and the reason only).

Released representations: ``none`` keeps the typed value (date32, int64, float64, bool or
string); ``month`` gives "YYYY-MM"; ``year`` gives "YYYY" for a date and keeps an integer year;
``top_code_90`` gives the age in whole years as a string with 90 and over as "90+";
``age_band_5`` gives "0-4", "5-9", ..., "85-89", "90+"; ``zip3`` gives the first three digits of
a 5-digit ZIP (ZIP+4 accepted) or "000" for a low-population ZIP3; ``date_shift`` adds the
person's shift in days and keeps a date32; ``suppress`` drops the column.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Mapping
from importlib import resources

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mpi.errors import InvalidInput, Problem

ATTRIBUTE_TYPES = ("string", "integer", "number", "boolean", "date")
ATTRIBUTE_CLASSES = ("quasi_identifier", "sensitive", "other")
GENERALIZATIONS = ("none", "month", "year", "top_code_90", "age_band_5", "zip3", "date_shift",
                   "suppress")
APPLICABLE: Mapping[str, frozenset[str]] = {
    "date": frozenset({"none", "month", "year", "date_shift", "suppress"}),
    "integer": frozenset({"none", "year", "top_code_90", "age_band_5", "zip3", "suppress"}),
    "number": frozenset({"none", "top_code_90", "age_band_5", "suppress"}),
    "string": frozenset({"none", "zip3", "suppress"}),
    "boolean": frozenset({"none", "suppress"}),
}
TOP_CODE_AGE = 90
_DATE_RE = r"^\d{4}-\d{2}-\d{2}$"
_INT_RE = r"^[+-]?\d+$"
_NUM_RE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_ZIP_RE = r"^\d{5}(-?\d{4})?$"
_BOOL_STRINGS = {"true": True, "false": False}


def _load_low_population_zip3() -> frozenset[str]:
    text = resources.files("mpi.extract").joinpath("data/low_population_zip3.csv").read_text()
    rows = csv.reader(line for line in text.splitlines() if line and not line.startswith("#"))
    header = next(rows)
    if header != ["zip3"]:
        raise RuntimeError("low_population_zip3.csv: expected a 'zip3' header")
    zips = frozenset(row[0] for row in rows)
    if not all(re.fullmatch(r"\d{3}", z) for z in zips):
        raise RuntimeError("low_population_zip3.csv: every row must be three digits")
    return zips


LOW_POPULATION_ZIP3: frozenset[str] = _load_low_population_zip3()


def allowed_generalizations(type: str) -> frozenset[str]:
    """The generalizations that apply to an attribute type; InvalidInput for an unknown type."""
    if type not in APPLICABLE:
        raise InvalidInput(f"unknown attribute type {type!r}; use one of {', '.join(ATTRIBUTE_TYPES)}")
    return APPLICABLE[type]


def check_generalization(name: str, type: str, generalization: str) -> None:
    """Raise InvalidInput when ``generalization`` is unknown or does not apply to ``type``."""
    if generalization not in GENERALIZATIONS:
        raise InvalidInput(f"attribute {name!r}: unknown generalization {generalization!r}; use one "
                           f"of {', '.join(GENERALIZATIONS)}")
    if generalization not in allowed_generalizations(type):
        raise InvalidInput(f"attribute {name!r}: generalization {generalization!r} does not apply to "
                           f"type {type!r} (allowed: {', '.join(sorted(APPLICABLE[type]))})")


def is_birth_attribute(name: str) -> bool:
    """Whether an attribute name says it holds a birth date or year (``birth``, ``dob``)."""
    lowered = name.lower()
    return "birth" in lowered or "dob" in re.split(r"[^a-z]+", lowered)


def pool_old_birth_years(values: pa.Array | pa.ChunkedArray, *,
                         floor_year: int) -> tuple[pa.Array, int]:
    """Released birth years (int64, or "YYYY" strings) at or before ``floor_year`` set to
    ``floor_year``: years that could mean an age of 90 or more form one category (HIPAA Safe
    Harbor). Returns the column and how many values were pooled."""
    arr = _as_array(values)
    years = arr if pa.types.is_integer(arr.type) else pc.cast(arr, pa.int64())
    old = pc.fill_null(pc.less(years, floor_year), False)
    pooled = int(pc.sum(old).as_py() or 0)
    floor = pa.scalar(floor_year if pa.types.is_integer(arr.type) else str(floor_year), arr.type)
    return pc.if_else(old, floor, arr), pooled


def default_generalization(name: str, type: str, klass: str) -> str:
    """Issue #5 defaults: birth dates -> year, dates -> month, ages -> 90+, ZIP -> ZIP3, else none."""
    lowered = name.lower()
    words = re.split(r"[^a-z]+", lowered)
    allowed = allowed_generalizations(type)
    if type == "date":
        return "year" if is_birth_attribute(name) else "month"
    if "age" in words and "top_code_90" in allowed:
        return "top_code_90"
    if ("zip" in lowered or "postal" in lowered) and "zip3" in allowed:
        return "zip3"
    return "none"


# ---- parsing raw columns -------------------------------------------------------------------

def _fail(name: str, bad: pa.Array, reason: str) -> InvalidInput:
    """An InvalidInput naming the attribute and the first bad row (1-based), never the value."""
    first = int(np.flatnonzero(np.asarray(bad.fill_null(False)))[0]) + 1
    count = int(pc.sum(bad.fill_null(False)).as_py() or 0)
    return InvalidInput(f"attribute {name!r}: {count} value(s) {reason}",
                        problems=[Problem(first, name, reason)])


def _check(name: str, ok: pa.Array, present: pa.Array, reason: str) -> None:
    bad = pc.and_(present, pc.invert(ok.fill_null(False)))
    if pc.any(bad).as_py():
        raise _fail(name, bad, reason)


def _as_array(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _strings(name: str, col: pa.Array, regex: str, reason: str) -> pa.Array:
    text = pc.utf8_trim_whitespace(col)
    _check(name, pc.match_substring_regex(text, regex), pc.is_valid(col), reason)
    return text


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _parse_string(name: str, arr: pa.Array) -> pa.Array:
    t = arr.type
    if _is_text(t):
        return arr.cast(pa.string())
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return arr.cast(pa.string())
    raise InvalidInput(f"attribute {name!r}: values must be strings")


def _parse_date(name: str, arr: pa.Array) -> pa.Array:
    t = arr.type
    if pa.types.is_date(t) or pa.types.is_timestamp(t):
        return arr.cast(pa.date32())
    if _is_text(t):
        text = _strings(name, arr, _DATE_RE, "are not dates (YYYY-MM-DD)")
        parsed = pc.strptime(text, format="%Y-%m-%d", unit="s", error_is_null=True)
        # strptime rolls 2020-02-30 over to March; a real date prints back the same
        same = pc.equal(pc.strftime(parsed, format="%Y-%m-%d"), text)
        _check(name, same, pc.is_valid(arr), "are not valid calendar dates")
        return parsed.cast(pa.date32())
    raise InvalidInput(f"attribute {name!r}: values must be dates (YYYY-MM-DD)")


def _parse_integer(name: str, arr: pa.Array) -> pa.Array:
    t = arr.type
    if pa.types.is_integer(t):
        return arr.cast(pa.int64())
    if pa.types.is_floating(t):
        _check(name, pc.equal(pc.floor(arr), arr), pc.is_valid(arr), "are not whole numbers")
        return arr.cast(pa.int64())
    if _is_text(t):
        text = _strings(name, arr, _INT_RE, "are not whole numbers")
        _check(name, pc.less_equal(pc.utf8_length(text), 18), pc.is_valid(arr), "are too large")
        return text.cast(pa.int64())
    raise InvalidInput(f"attribute {name!r}: values must be whole numbers")


def _parse_number(name: str, arr: pa.Array) -> pa.Array:
    t = arr.type
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        out = arr.cast(pa.float64())
    elif _is_text(t):
        out = _strings(name, arr, _NUM_RE, "are not numbers").cast(pa.float64())
    else:
        raise InvalidInput(f"attribute {name!r}: values must be numbers")
    _check(name, pc.is_finite(out), pc.is_valid(out), "are not finite numbers")
    return out


def _parse_boolean(name: str, arr: pa.Array) -> pa.Array:
    t = arr.type
    if pa.types.is_boolean(t):
        return arr
    if _is_text(t):
        lowered = pc.utf8_lower(pc.utf8_trim_whitespace(arr))
        _check(name, pc.is_in(lowered, pa.array(list(_BOOL_STRINGS))), pc.is_valid(arr),
               "are not true or false")
        return pc.equal(lowered, "true")
    raise InvalidInput(f"attribute {name!r}: values must be true or false")


_PARSERS: Mapping[str, Callable[[str, pa.Array], pa.Array]] = {
    "string": _parse_string, "date": _parse_date, "integer": _parse_integer,
    "number": _parse_number, "boolean": _parse_boolean,
}


def parse_column(name: str, col: pa.Array | pa.ChunkedArray, type: str) -> pa.Array:
    """Convert a raw attribute column to its canonical Arrow type, or raise InvalidInput."""
    arr = _as_array(col)
    if pa.types.is_null(arr.type):
        allowed_generalizations(type)
        return pa.nulls(len(arr), _ARROW_TYPES[type])
    parser = _PARSERS.get(type)
    if parser is None:
        allowed_generalizations(type)  # raises for an unknown type
        raise AssertionError("unreachable")
    return parser(name, arr)


_ARROW_TYPES: Mapping[str, pa.DataType] = {"string": pa.string(), "integer": pa.int64(),
                                           "number": pa.float64(), "boolean": pa.bool_(),
                                           "date": pa.date32()}


# ---- generalizations ------------------------------------------------------------------------

def _ages(name: str, values: pa.Array) -> pa.Array:
    """Whole years (floor) as int64; negative ages are refused."""
    years = pc.floor(values).cast(pa.int64()) if pa.types.is_floating(values.type) else values
    _check(name, pc.greater_equal(years, 0), pc.is_valid(years), "are negative ages")
    _check(name, pc.less(years, 200), pc.is_valid(years), "are implausible ages (200 or more)")
    return years


def top_code_90(name: str, values: pa.Array) -> pa.Array:
    """Ages in whole years as strings, 90 and over as "90+"."""
    years = _ages(name, values)
    return pc.if_else(pc.greater_equal(years, TOP_CODE_AGE), "90+", years.cast(pa.string()))


def age_band_5(name: str, values: pa.Array, *, width: int = 5) -> pa.Array:
    """Ages in ``width``-year bands ("0-4", "5-9", ...), 90 and over as "90+"."""
    years = _ages(name, values)
    low = pc.multiply(pc.divide(years, width), width)
    label = pc.binary_join_element_wise(low.cast(pa.string()),
                                        pc.add(low, width - 1).cast(pa.string()), "-")
    return pc.if_else(pc.greater_equal(years, TOP_CODE_AGE), "90+", label)


def zip3(name: str, values: pa.Array) -> pa.Array:
    """First three digits of a 5-digit ZIP (ZIP+4 accepted); low-population ZIP3s -> "000"."""
    if pa.types.is_integer(values.type):
        _check(name, pc.and_(pc.greater_equal(values, 0), pc.less_equal(values, 99999)),
               pc.is_valid(values), "are not 5-digit ZIP codes")
        text = pc.utf8_lpad(values.cast(pa.string()), 5, "0")
    else:
        text = _strings(name, values, _ZIP_RE, "are not 5-digit ZIP codes")
    first3 = pc.utf8_slice_codeunits(text, 0, 3)
    low = pc.is_in(first3, pa.array(sorted(LOW_POPULATION_ZIP3)))
    return pc.if_else(low, "000", first3)


def shift_dates(name: str, values: pa.Array, shift_days: pa.Array | pa.ChunkedArray | None) -> pa.Array:
    """Each date plus its row's shift in days (date32); intervals within a person are kept."""
    if shift_days is None:
        raise InvalidInput(f"attribute {name!r}: date_shift needs per-row shift days")
    shifts = _as_array(shift_days)
    if len(shifts) != len(values) or not pa.types.is_integer(shifts.type):
        raise InvalidInput(f"attribute {name!r}: shift days must be integers, one per row")
    days = values.cast(pa.int32()).cast(pa.int64())
    return pc.add(days, shifts.cast(pa.int64())).cast(pa.int32()).cast(pa.date32())


def apply_generalization(name: str, values: pa.Array, type: str, generalization: str, *,
                         shift_days: pa.Array | pa.ChunkedArray | None = None) -> pa.Array | None:
    """One parsed column, generalized; None for ``suppress`` (the column is dropped)."""
    check_generalization(name, type, generalization)
    if generalization == "suppress":
        return None
    if generalization == "none":
        return values
    if generalization == "month":
        return pc.strftime(values, format="%Y-%m")
    if generalization == "year":
        return values if type == "integer" else pc.strftime(values, format="%Y")
    if generalization == "top_code_90":
        return top_code_90(name, values)
    if generalization == "age_band_5":
        return age_band_5(name, values)
    if generalization == "zip3":
        return zip3(name, values)
    return shift_dates(name, values, shift_days)


def infer_type(col: pa.Array | pa.ChunkedArray, generalization: str) -> str:
    """The attribute type implied by a generalization and the column's Arrow type."""
    t = col.type
    if generalization in ("month", "date_shift"):
        return "date"
    if generalization == "year":
        return "integer" if pa.types.is_integer(t) else "date"
    if generalization in ("top_code_90", "age_band_5"):
        return "integer" if pa.types.is_integer(t) else "number"
    if generalization == "zip3":
        return "integer" if pa.types.is_integer(t) else "string"
    for type, arrow in _ARROW_TYPES.items():
        if t == arrow:
            return type
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "number"
    if pa.types.is_date(t) or pa.types.is_timestamp(t):
        return "date"
    return "string"


def generalize(table: pa.Table, plan: Mapping[str, str], *,
               shift_days: pa.Array | pa.ChunkedArray | None = None,
               types: Mapping[str, str] | None = None) -> pa.Table:
    """The plan's columns (in plan order), each parsed for its type and generalized.

    ``types`` gives each attribute's dictionary type; a column without one gets the type its
    generalization implies (``infer_type``). ``shift_days`` (one int per row) is required when a
    column uses ``date_shift``. Suppressed columns are left out.
    """
    columns: dict[str, pa.Array] = {}
    for name, generalization in plan.items():
        if name not in table.column_names:
            raise InvalidInput(f"attribute {name!r} is not in the table",
                               problems=[Problem(None, name, "missing column")])
        col = table.column(name)
        type = (types or {}).get(name) or infer_type(col, generalization)
        check_generalization(name, type, generalization)
        if generalization == "suppress":
            continue
        out = apply_generalization(name, parse_column(name, col, type), type, generalization,
                                   shift_days=shift_days)
        if out is not None:
            columns[name] = out
    return pa.table(columns) if columns else table.select([]).slice(0, table.num_rows)
