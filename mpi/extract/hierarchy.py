"""Generalization hierarchies of released columns: each column's ladder of ever coarser levels.

Owns: the hierarchy of every attribute type (dates: day -> month -> quarter -> year; months and
year strings the upper part of that ladder; birth and other years: year -> 5-year band ->
10-year band; ages: whole years / "90+" -> 5-, 10-, 20-year bands; ZIP5 -> ZIP3 -> state ->
census region, from the ZIP3 table in package data; categories: the dictionary's grouping maps;
numbers: data-driven bands; booleans; the link probability: 3 -> 2 -> 1 decimals), whose top
level is always "suppressed" (null), the integer codes of every level (what the recoding search
compares) and ``release``, which materializes a column whose rows sit at different levels.
Must not: run SQL, read the registry, decide which level to release (mpi/extract/recoding.py
does) or put a value into an error message.

Levels act on the released form of a column (after the request's own generalization), so a
level never undoes one: a column released as ``month`` starts at the month. Each level is a
function of the level below (bands nest), so classes of a coarser node are unions of classes of
a finer one (mpi/extract/recoding.py relies on it to search on class representatives). Nulls stay null on
every level (a missing value is a value too). Codes of different levels never coincide, so two
rows share a class only when they sit on the same level with equal values; this splits nothing
an attacker could merge wrongly (equal released values on different levels only make classes
larger).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from mpi.errors import InvalidInput
from mpi.extract.generalize import is_birth_attribute, zip3

SUPPRESSED = "*"
LINK_WEIGHT = 0.25
REGIONS: Mapping[str, str] = {
    **dict.fromkeys(("CT", "ME", "MA", "NH", "RI", "VT", "NJ", "NY", "PA"), "Northeast"),
    **dict.fromkeys(("IL", "IN", "MI", "OH", "WI", "IA", "KS", "MN", "MO", "NE", "ND", "SD"),
                    "Midwest"),
    **dict.fromkeys(("DE", "DC", "FL", "GA", "MD", "NC", "SC", "VA", "WV", "AL", "KY", "MS",
                     "TN", "AR", "LA", "OK", "TX"), "South"),
    **dict.fromkeys(("AZ", "CO", "ID", "MT", "NV", "NM", "UT", "WY", "AK", "CA", "HI", "OR",
                     "WA"), "West"),
    **dict.fromkeys(("PR", "VI", "GU", "AE", "AA", "AP"), "Territories and military"),
}


def _load_zip3_states() -> dict[str, str]:
    text = resources.files("mpi.extract").joinpath("data/zip3_state.csv").read_text()
    rows = csv.reader(line for line in text.splitlines() if line and not line.startswith("#"))
    if next(rows) != ["low", "high", "state"]:
        raise RuntimeError("zip3_state.csv: expected a 'low,high,state' header")
    out: dict[str, str] = {}
    for low, high, state in rows:
        if state not in REGIONS or not (re.fullmatch(r"\d{3}", low) and re.fullmatch(r"\d{3}", high)):
            raise RuntimeError("zip3_state.csv: rows are three-digit low, high and a known state")
        for z in range(int(low), int(high) + 1):
            out[f"{z:03d}"] = state
    return out


ZIP3_STATE: Mapping[str, str] = _load_zip3_states()


@dataclass(frozen=True)
class Hierarchy:
    """One released column's levels (level 0 = as requested; the last = suppressed)."""

    column: str
    kind: str
    names: tuple[str, ...]                 # level names, e.g. ("month", "quarter", "year", "*")
    levels: tuple[pa.Array, ...]           # one dictionary-encoded array per level
    codes: tuple[npt.NDArray[np.int64], ...]  # per level: codes, disjoint across levels
    weight: float = 1.0                    # its share in the information-loss measure
    bases: tuple[int, ...] = ()            # per level: its first code
    sizes: tuple[int, ...] = ()            # per level: how many codes it has

    @property
    def height(self) -> int:
        """The top level's index (the suppressed level)."""
        return len(self.levels) - 1


def _encode(levels: Sequence[pa.Array]) -> tuple[tuple[pa.Array, ...], tuple[npt.NDArray[np.int64], ...],
                                                 tuple[int, ...], tuple[int, ...]]:
    encoded: list[pa.Array] = []
    codes: list[npt.NDArray[np.int64]] = []
    bases: list[int] = []
    sizes: list[int] = []
    offset = 0
    for arr in levels:
        enc = pc.dictionary_encode(arr, null_encoding="encode")
        if isinstance(enc, pa.ChunkedArray):
            enc = enc.combine_chunks()
        idx = np.asarray(enc.indices.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
        encoded.append(enc)
        codes.append(idx + offset)
        bases.append(offset)
        sizes.append(max(len(enc.dictionary), 1))
        offset += sizes[-1]
    return tuple(encoded), tuple(codes), tuple(bases), tuple(sizes)


def _make(column: str, kind: str, named: Sequence[tuple[str, pa.Array]], *,
          weight: float = 1.0) -> Hierarchy:
    n = len(named[0][1])
    top_type = pa.float64() if pa.types.is_floating(named[0][1].type) else pa.string()
    full = [*named, (SUPPRESSED, pa.nulls(n, top_type))]
    levels, codes, bases, sizes = _encode([a for _, a in full])
    return Hierarchy(column, kind, tuple(name for name, _ in full), levels, codes, weight,
                     bases, sizes)


# ---- level functions ------------------------------------------------------------------------
def _join(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _year_band(years: pa.Array, width: int) -> pa.Array:
    low = pc.multiply(pc.floor(pc.divide(years.cast(pa.float64()), width)), width).cast(pa.int64())
    return _join(low.cast(pa.string()), "-", pc.add(low, width - 1).cast(pa.string()))


def _years_of(name: str, values: pa.Array) -> pa.Array:
    if pa.types.is_integer(values.type) or not len(pc.drop_null(values)):
        return values.cast(pa.int64())
    ok = pc.match_substring_regex(values, r"^\d{4}$")
    if not pc.all(ok.fill_null(True)).as_py():
        raise InvalidInput(f"attribute {name!r}: year bands need 'YYYY' values")
    return values.cast(pa.int64())


def _quarter_from_month(values: pa.Array) -> pa.Array:
    year = pc.utf8_slice_codeunits(values, 0, 4)
    month = pc.utf8_slice_codeunits(values, 5, 7).cast(pa.int64())
    q = pc.add(pc.divide(pc.subtract(month, 1), 3), 1)
    return _join(year, "-Q", q.cast(pa.string()))


def _ages_of(name: str, values: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Lower bounds of ages ("NN", "lo-hi" or numbers) and whether each is 90+."""
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
        ages = pc.floor(values.cast(pa.float64())).cast(pa.int64())
        return ages, pc.greater_equal(ages, 90)
    top = pc.equal(values, "90+")
    low = pc.struct_field(pc.extract_regex(values, r"^(?P<low>\d{1,3})(?:-\d{1,3})?$"), "low")
    bad = pc.and_(pc.is_valid(values), pc.invert(pc.or_(top, pc.is_valid(low)).fill_null(False)))
    if pc.any(bad).as_py():
        raise InvalidInput(f"attribute {name!r}: age bands need ages, 'NN' or '90+' values")
    return pc.if_else(top, 90, low.cast(pa.int64())), top


def _age_band(ages: pa.Array, top: pa.Array, width: int) -> pa.Array:
    low = pc.multiply(pc.divide(ages, width), width)
    label = _join(low.cast(pa.string()), "-", pc.add(low, width - 1).cast(pa.string()))
    return pc.if_else(top, "90+", label)


def _map(values: pa.Array, mapping: Mapping[str, str], other: str = "(other)") -> pa.Array:
    keys = pa.array(list(mapping), pa.string())
    targets = pa.array(list(mapping.values()), pa.string())
    idx = pc.index_in(values, value_set=keys)
    mapped = pc.take(targets, idx)
    return pc.if_else(pc.is_valid(values), pc.coalesce(mapped, pa.scalar(other)),
                      pa.scalar(None, pa.string()))


def _nice(x: float) -> float:
    if x <= 0 or not math.isfinite(x):
        return 1.0
    p = 10 ** math.floor(math.log10(x))
    for m in (1, 2, 5, 10):
        if m * p >= x:
            return float(m * p)
    return float(10 * p)


def _number_band(values: pa.Array, width: float, integer: bool) -> pa.Array:
    low = pc.multiply(pc.floor(pc.divide(values.cast(pa.float64()), width)), width)
    high = pc.add(low, width)
    if integer:
        return _join(low.cast(pa.int64()).cast(pa.string()), "-",
                     pc.subtract(high, 1).cast(pa.int64()).cast(pa.string()))
    return _join("[", low.cast(pa.string()), ", ", high.cast(pa.string()), ")")


# ---- building hierarchies ---------------------------------------------------------------------
def _is_zip(name: str) -> bool:
    lowered = name.lower()
    return "zip" in lowered or "postal" in lowered


def _is_age(name: str) -> bool:
    return "age" in re.split(r"[^a-z]+", name.lower())


def identifying_kind(name: str, type: str) -> bool:
    """Whether an attribute is a date, ZIP, age or birth field (never releasable as-is)."""
    return type == "date" or _is_zip(name) or _is_age(name) or is_birth_attribute(name)


def groupings(hierarchy: object) -> list[dict[str, str]]:
    """A dictionary's grouping maps for a categorical attribute: one map (value -> group) or a
    list of maps (each level's groups -> the next level's); InvalidInput when malformed."""
    if hierarchy is None:
        return []
    maps = [hierarchy] if isinstance(hierarchy, Mapping) else hierarchy
    if not isinstance(maps, list) or not 1 <= len(maps) <= 4 or not all(
            isinstance(m, Mapping) and 0 < len(m) <= 5000 and all(
                isinstance(k, str) and isinstance(v, str) and 0 < len(v) <= 200
                for k, v in m.items()) for m in maps):
        raise InvalidInput("hierarchy: a map of value -> group (strings), or a list of 1-4 such "
                           "maps (value -> group, group -> larger group, ...)")
    return [dict(m) for m in maps]


def build_hierarchy(column: str, values: pa.Array | pa.ChunkedArray, *, name: str, type: str,
                    generalization: str, grouping: object = None) -> Hierarchy:
    """The hierarchy of one released attribute column (``name``: the attribute's name)."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if pa.types.is_null(arr.type):  # no value at all (e.g. an empty cohort)
        arr = arr.cast(pa.string())
    t = arr.type
    if pa.types.is_date(t):
        return _make(column, "date", [
            ("day", arr), ("month", pc.strftime(arr, format="%Y-%m")),
            ("quarter", _join(pc.year(arr).cast(pa.string()), "-Q",
                              pc.quarter(arr).cast(pa.string()))),
            ("year", pc.strftime(arr, format="%Y"))])
    if generalization == "month":
        return _make(column, "month", [("month", arr), ("quarter", _quarter_from_month(arr)),
                                       ("year", pc.utf8_slice_codeunits(arr, 0, 4))])
    if _is_zip(name) and (pa.types.is_string(t) or pa.types.is_integer(t)):
        z3 = arr if generalization == "zip3" else zip3(column, arr)
        state = _map(z3, ZIP3_STATE, other="(unknown)")
        region = _map(state, REGIONS, other="(unknown)")
        first = [("zip3", z3)] if generalization == "zip3" else [("zip5", arr), ("zip3", z3)]
        return _make(column, "zip", [*first, ("state", state), ("region", region)])
    if generalization == "year" or (is_birth_attribute(name) and pa.types.is_integer(t)):
        years = _years_of(column, arr)
        return _make(column, "year", [("year", arr), ("5_years", _year_band(years, 5)),
                                      ("10_years", _year_band(years, 10))])
    if generalization in ("top_code_90", "age_band_5") or (
            _is_age(name) and (pa.types.is_integer(t) or pa.types.is_floating(t))):
        ages, top = _ages_of(column, arr)
        first = [("age_band_5", arr)] if generalization == "age_band_5" else \
            [("age", arr), ("age_band_5", _age_band(ages, top, 5))]
        return _make(column, "age", [*first, ("age_band_10", _age_band(ages, top, 10)),
                                     ("age_band_20", _age_band(ages, top, 20))])
    if pa.types.is_boolean(t):
        return _make(column, "boolean", [("value", arr)])
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        valid = pc.drop_null(arr)
        lo, hi = (pc.min(valid).as_py(), pc.max(valid).as_py()) if len(valid) else (0, 0)
        span = float(hi - lo) if lo is not None and hi is not None else 0.0
        fine = _nice(span / 20)
        integer = pa.types.is_integer(t)
        if integer:
            fine = max(fine, 1.0)
        coarse = fine * max(2, math.ceil(_nice(span / 4) / fine))   # a multiple: bands nest
        return _make(column, "number", [("value", arr), (f"band_{fine:g}", _number_band(arr, fine, integer)),
                                        (f"band_{coarse:g}", _number_band(arr, coarse, integer))])
    text = arr.cast(pa.string())
    named: list[tuple[str, pa.Array]] = [("value", text)]
    for i, mapping in enumerate(groupings(grouping), start=1):
        named.append((f"group_{i}", _map(named[-1][1], mapping)))
    return _make(column, "category", named)


def link_hierarchy(column: str, values: pa.Array | pa.ChunkedArray) -> Hierarchy:
    """The link probability: 3, 2 and 1 decimals, then suppressed (floats throughout). It
    weighs a quarter of an attribute in the loss: its last decimals matter less to research
    than a birth year or a date."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    two = pc.round(arr, 2)
    return _make(column, "link_probability", [
        ("3_decimals", arr), ("2_decimals", two), ("1_decimal", pc.round(two, 1))],
        weight=LINK_WEIGHT)


def fixed_hierarchy(column: str, values: pa.Array | pa.ChunkedArray) -> Hierarchy:
    """A column that is never generalized (the agency): one level, no suppressed top."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    levels, codes, bases, sizes = _encode([arr])
    return Hierarchy(column, "fixed", ("value",), levels, codes, 1.0, bases, sizes)


def _plain(arr: pa.Array) -> pa.Array:
    return arr.dictionary.take(arr.indices) if pa.types.is_dictionary(arr.type) else arr


def release(h: Hierarchy, row_levels: npt.NDArray[np.int64]) -> pa.Array:
    """The released column of the first ``len(row_levels)`` rows when each sits at its own level
    (one level: the typed values; several: strings, or floats for the link probability)."""
    n = len(row_levels)                # the first n rows of the hierarchy
    used = np.unique(row_levels)
    if len(used) == 1:
        return _plain(h.levels[int(used[0])]).slice(0, n)
    parts = [_plain(h.levels[int(lv)]) for lv in range(len(h.levels))]
    target = pa.float64() if pa.types.is_floating(parts[0].type) else pa.string()
    cast = [p.cast(target) for p in parts]
    size = len(parts[0])
    idx = row_levels.astype(np.int64) * size + np.arange(n, dtype=np.int64)
    return pc.take(pa.concat_arrays(cast), pa.array(idx))
