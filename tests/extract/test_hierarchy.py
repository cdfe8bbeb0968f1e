"""Generalization hierarchies (issue #16, Decision 75): every attribute type climbs to the
suppressed top, levels act on the released form, and mixed-level release keeps values."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from mpi.errors import InvalidInput
from mpi.extract.hierarchy import (
    ZIP3_STATE,
    build_hierarchy,
    groupings,
    identifying_kind,
    link_hierarchy,
    release,
)


def _levels(h: object, n: int) -> list[list[object]]:
    return [release(h, np.full(n, lv, dtype=np.int64)).to_pylist()  # type: ignore[arg-type]
            for lv in range(len(h.levels))]  # type: ignore[attr-defined]


def test_dates_climb_day_month_quarter_year() -> None:
    h = build_hierarchy("a.d", pa.array([dt.date(2020, 5, 17), None]), name="enrolled_on",
                        type="date", generalization="none")
    assert h.names == ("day", "month", "quarter", "year", "*")
    assert [v[0] for v in _levels(h, 2)] == [dt.date(2020, 5, 17), "2020-05", "2020-Q2", "2020", None]
    assert all(v[1] is None for v in _levels(h, 2))   # null stays null


def test_months_years_ages_zips_and_numbers() -> None:
    m = build_hierarchy("a.m", pa.array(["2021-11"]), name="enrolled_on", type="date",
                        generalization="month")
    assert [v[0] for v in _levels(m, 1)] == ["2021-11", "2021-Q4", "2021", None]
    y = build_hierarchy("a.b", pa.array([1983]), name="birth_year", type="integer",
                        generalization="none")
    assert [v[0] for v in _levels(y, 1)] == [1983, "1980-1984", "1980-1989", None]
    age = build_hierarchy("a.age", pa.array(["37", "90+"]), name="age", type="integer",
                          generalization="top_code_90")
    assert _levels(age, 2) == [["37", "90+"], ["35-39", "90+"], ["30-39", "90+"],
                               ["20-39", "90+"], [None, None]]
    z = build_hierarchy("a.zip", pa.array(["02139", "94110"]), name="postal_code",
                        type="string", generalization="none")
    assert _levels(z, 2) == [["02139", "94110"], ["021", "941"], ["MA", "CA"],
                             ["Northeast", "West"], [None, None]]
    assert ZIP3_STATE["021"] == "MA" and "000" not in ZIP3_STATE
    n = build_hierarchy("a.h", pa.array([1, 7, 40]), name="household_size", type="integer",
                        generalization="none")
    assert n.kind == "number" and n.height == 3 and _levels(n, 3)[-1] == [None] * 3


def test_categories_use_the_dictionary_groupings() -> None:
    maps = groupings({"SNAP": "food", "WIC": "food", "TANF": "cash"})
    h = build_hierarchy("a.p", pa.array(["SNAP", "WIC", "HOUSING"]), name="program",
                        type="string", generalization="none", grouping=maps)
    assert _levels(h, 3)[1] == ["food", "food", "(other)"]
    with pytest.raises(InvalidInput):
        groupings([{"a": 1}])


def test_link_probability_bands_and_mixed_release() -> None:
    h = link_hierarchy("link", pa.array([0.9876, None]))
    assert [v[0] for v in _levels(h, 2)] == [0.9876, 0.99, 1.0, None]
    d = build_hierarchy("a.d", pa.array([dt.date(2020, 5, 17), dt.date(2021, 1, 2)]),
                        name="enrolled_on", type="date", generalization="none")
    mixed = release(d, np.array([0, 3], dtype=np.int64))
    assert mixed.to_pylist() == ["2020-05-17", "2021"]


def test_identifying_kinds() -> None:
    assert identifying_kind("enrolled_on", "date") and identifying_kind("zip", "string")
    assert identifying_kind("birth_year", "integer") and identifying_kind("age", "integer")
    assert not identifying_kind("program", "string")
