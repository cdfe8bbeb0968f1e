"""Aggregate tables (issue #5): the test plays the attacker and tries to recover suppressed counts.

The attacker here is written independently of mpi/extract/aggregate.py: it rebuilds the linear
system from the *published* cells and margins only, then (1) peels sums with one unknown term
(simple differencing, repeated), and (2) solves linear and integer programs for the min and max
of every suppressed count, knowing counts are whole and (stronger attacker) that a suppressed
count is never 0. A count is recovered when its min equals its max.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from mpi.errors import InvalidInput
from mpi.extract.aggregate import TOTAL, AggregateResult, aggregate

THRESHOLD = 11
Item = tuple[str, Any]          # ("cell", levels tuple) | ("margin", (dim, level)) | ("total", None)


def table_from_counts(counts: np.ndarray, dims: list[str]) -> pa.Table:
    """Rows whose cross-tabulation over dims is exactly ``counts`` (level j of dim d = f"{d}{j}")."""
    cols: dict[str, list[str | None]] = {d: [] for d in dims}
    for idx in itertools.product(*(range(s) for s in counts.shape)):
        for _ in range(int(counts[idx])):
            for d, j in zip(dims, idx, strict=True):
                cols[d].append(label(d, j))
    return pa.table({d: pa.array(v, type=pa.string()) for d, v in cols.items()})


Equations = list[list[tuple[Item, int]]]


def published_system(res: AggregateResult, dims: list[str]) -> tuple[dict[Item, int | None], Equations]:
    """Items with their published value (None = suppressed) and the sums the attacker knows hold."""
    value: dict[Item, int | None] = {}
    cells = res.cells.to_pylist()
    for row in cells:
        value[("cell", tuple(row[d] for d in dims))] = row["count"]
    total_row = res.margins[TOTAL].to_pylist()[0]
    value[("total", None)] = total_row["count"]
    equations: list[list[tuple[Item, int]]] = []
    if len(dims) == 1:
        equations.append([(("cell", (r[dims[0]],)), 1) for r in cells] + [(("total", None), -1)])
        return value, equations
    for d in dims:
        margin_rows = res.margins[d].to_pylist()
        for m in margin_rows:
            value[("margin", (d, m[d]))] = m["count"]
            members = [(("cell", tuple(r[x] for x in dims)), 1) for r in cells if r[d] == m[d]]
            equations.append(members + [(("margin", (d, m[d])), -1)])
        equations.append([(("margin", (d, m[d])), 1) for m in margin_rows] + [(("total", None), -1)])
    return value, equations


def peel(value: dict[Item, int | None], equations: list[list[tuple[Item, int]]]) -> dict[Item, int]:
    """Simple differencing: solve any sum with one unknown term, repeat until nothing changes."""
    known = {k: v for k, v in value.items() if v is not None}
    recovered: dict[Item, int] = {}
    changed = True
    while changed:
        changed = False
        for eq in equations:
            unknown = [(k, c) for k, c in eq if k not in known]
            if len(unknown) == 1:
                k, c = unknown[0]
                known[k] = recovered[k] = -sum(cc * known[kk] for kk, cc in eq if kk in known) // c
                changed = True
    return recovered


def attack_bounds(value: dict[Item, int | None], equations: list[list[tuple[Item, int]]], *,
                  lower: int, integer: bool) -> dict[Item, tuple[float, float]]:
    """The attacker's [min, max] of every suppressed item, by linear or integer programming."""
    unknowns = sorted((k for k, v in value.items() if v is None), key=repr)
    if not unknowns:
        return {}
    col = {k: i for i, k in enumerate(unknowns)}
    a = np.zeros((len(equations), len(unknowns)))
    b = np.zeros(len(equations))
    for r, eq in enumerate(equations):
        for k, c in eq:
            if k in col:
                a[r, col[k]] += c
            else:
                b[r] -= c * value[k]    # type: ignore[operator]
    out = {}
    for k in unknowns:
        ext = []
        for sign in (1.0, -1.0):
            c = np.zeros(len(unknowns))
            c[col[k]] = sign
            res = linprog(c, A_eq=a, b_eq=b, bounds=(lower, None), method="highs",
                          integrality=np.ones(len(unknowns)) if integer else None)
            if res.status == 4 and integer:  # HiGHS presolve could not tell: solve it in full
                res = linprog(c, A_eq=a, b_eq=b, bounds=(lower, None), method="highs",
                              integrality=np.ones(len(unknowns)), options={"presolve": False})
            if res.status == 4:       # "infeasible or unbounded": the truth is feasible, so check
                res = linprog(c, A_eq=a, b_eq=b, bounds=(lower, None), method="highs")
                assert res.status == 3, res.message
            assert res.status in (0, 3), res.message
            ext.append(np.inf * -sign if res.status == 3 else sign * res.fun)
        out[k] = (ext[0], ext[1])
    return out


def label(d: str, j: int) -> str | None:
    return None if j == 0 and d.endswith("n") else f"{d}{j}"


def truth_of(counts: np.ndarray, dims: list[str], levels: list[list[int]]) -> dict[Item, int]:
    """True values of every item, in the attacker's naming; ``levels`` are the present levels."""
    sub = counts[np.ix_(*levels)]
    truth: dict[Item, int] = {}
    for idx in itertools.product(*(range(len(lv)) for lv in levels)):
        key = tuple(label(d, levels[a][j]) for a, (d, j) in enumerate(zip(dims, idx, strict=True)))
        truth[("cell", key)] = int(sub[idx])
    for a, d in enumerate(dims if len(dims) > 1 else []):    # a 1-D table's margin is its cells
        margin = sub.sum(axis=tuple(x for x in range(len(dims)) if x != a))
        for j, v in enumerate(margin):
            truth[("margin", (d, label(d, levels[a][j])))] = int(v)
    truth[("total", None)] = int(counts.sum())
    return truth


def present_levels(counts: np.ndarray) -> list[list[int]]:
    """Levels that occur (a level with no rows is not in the published grid)."""
    sums = [counts.sum(axis=tuple(x for x in range(counts.ndim) if x != a)) for a in range(counts.ndim)]
    return [[int(j) for j in np.flatnonzero(m > 0)] for m in sums]


def assert_protected(counts: np.ndarray, dims: list[str], res: AggregateResult) -> dict[str, int]:
    """Everything the issue asks of a published table; returns what the attack saw."""
    value, equations = published_system(res, dims)
    truth = truth_of(counts, dims, present_levels(counts))
    assert set(value) == set(truth)
    for k, v in value.items():
        if v is not None:
            assert v == truth[k], f"{k}: published {v}, true {truth[k]}"
            assert not 1 <= truth[k] < THRESHOLD, f"{k}: small count {truth[k]} published"
        else:
            assert truth[k] != 0, f"{k}: a zero was suppressed"
    assert peel(value, equations) == {}, "simple differencing recovered a suppressed count"
    suppressed = [k for k, v in value.items() if v is None]
    for lower, integer in ((0, False), (1, False), (1, True)):
        bounds = attack_bounds(value, equations, lower=lower, integer=integer)
        for k, (low, high) in bounds.items():
            t = truth[k]
            assert low - 1e-6 <= t <= high + 1e-6, (k, low, t, high)   # the attacker model is sound
            if integer:
                assert high - low >= 1 - 1e-6, f"{k} recovered: {low}..{high}"
            else:
                assert high - low > 1e-6, f"{k} recovered: {low}..{high}"
    return {"suppressed": len(suppressed)}


small_or_large = st.one_of(st.just(0), st.integers(1, THRESHOLD - 1), st.integers(THRESHOLD, 60))


@st.composite
def count_tables(draw: st.DrawFn) -> tuple[np.ndarray, list[str]]:
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 5 if ndim < 3 else 3)) for _ in range(ndim))
    flat = draw(st.lists(small_or_large, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    dims = ["a", "bn", "c"][:ndim]            # "bn": its level 0 is null (null is a level)
    return np.array(flat, dtype=np.int64).reshape(shape), dims


@pytest.mark.integration
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(count_tables())
def test_no_suppressed_count_can_be_recovered(case: tuple[np.ndarray, list[str]]) -> None:
    counts, dims = case
    res = aggregate(table_from_counts(counts, dims), dims, threshold=THRESHOLD)
    if counts.sum() == 0:
        assert res.cells.num_rows == 1
        assert res.margins[TOTAL].to_pylist() == [{"count": 0, "suppressed": False}]
        return
    assert_protected(counts, dims, res)
    report = res.report
    complements = report["cells_suppressed_complementary"] + report["margins_suppressed_complementary"]
    event(f"{len(dims)}-D, {'with' if complements else 'no'} complementary suppression")
    sub = counts[np.ix_(*present_levels(counts))]
    assert res.report["cells_suppressed_primary"] == int(((sub >= 1) & (sub < THRESHOLD)).sum())


def test_attacker_recovers_a_naive_suppression() -> None:
    """The attack is real: on primary-only suppression it recovers the hidden counts."""
    counts = np.array([[3, 40], [25, 30]])
    value = {("cell", ("a0", "b0")): None, ("cell", ("a0", "b1")): 40, ("cell", ("a1", "b0")): 25,
             ("cell", ("a1", "b1")): 30, ("margin", ("a", "a0")): 43, ("margin", ("a", "a1")): 55,
             ("margin", ("b", "b0")): 28, ("margin", ("b", "b1")): 70, ("total", None): 98}
    eqs = [[(("cell", ("a0", "b0")), 1), (("cell", ("a0", "b1")), 1), (("margin", ("a", "a0")), -1)]]
    assert peel(value, eqs) == {("cell", ("a0", "b0")): 3}
    # two suppressed cells in one row: that row's sum no longer gives them, the column's does
    value2: dict[Item, int | None] = {**value, ("cell", ("a0", "b1")): None}
    eqs2 = [[(("cell", ("a0", "b0")), 1), (("cell", ("a0", "b1")), 1), (("margin", ("a", "a0")), -1)],
            [(("cell", ("a0", "b0")), 1), (("cell", ("a1", "b0")), 1), (("margin", ("b", "b0")), -1)]]
    bounds = attack_bounds(value2, eqs2, lower=1, integer=True)
    assert bounds[("cell", ("a0", "b0"))] == (3, 3)
    res = aggregate(table_from_counts(counts, ["a", "b"]), ["a", "b"])
    assert res.report["cells_suppressed_complementary"] + res.report["margins_suppressed_complementary"] >= 1
    assert_protected(counts, ["a", "b"], res)


def test_lower_bound_knowledge_is_used() -> None:
    """Two suppressed ones summing to 2 are pinned by 'never 0'; the audit must see that."""
    counts = np.array([1, 1, 50])
    res = aggregate(table_from_counts(counts, ["a"]), ["a"])
    assert_protected(counts, ["a"], res)
    assert res.margins[TOTAL].column("suppressed")[0].as_py() or res.cells.column("suppressed")[2].as_py()
    assert res.report["audit"]["complementary_by_audit"] == 1


@pytest.mark.parametrize("shape", [(7,), (6, 5), (4, 4, 3)])
def test_random_skewed_tables(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(sum(shape))
    counts = np.minimum(rng.geometric(0.08, size=shape) - 1, 80)
    counts[rng.random(shape) < 0.15] = 0
    dims = ["a", "b", "c"][:len(shape)]
    res = aggregate(table_from_counts(counts, dims), dims)
    seen = assert_protected(counts, dims, res)
    assert seen["suppressed"] >= res.report["cells_suppressed_primary"] > 0


def test_published_shape_and_errors() -> None:
    t = pa.table({"sex": ["F"] * 30 + ["M"] * 4 + [None] * 12, "n": list(range(46))})
    res = aggregate(t, ["sex"])
    assert res.cells.column_names == ["sex", "count", "suppressed"]
    assert res.cells.column("sex").to_pylist() == ["F", "M", None]
    assert res.cells.schema.field("count").type == pa.int64()
    rows = res.cells.to_pylist()
    assert rows[1]["count"] is None and rows[1]["suppressed"]
    assert rows[0]["suppressed"] or rows[2]["suppressed"]     # the complement
    assert set(res.margins) == {"sex", TOTAL}
    for bad in ([], ["nope"], ["sex", "sex"]):
        with pytest.raises(InvalidInput):
            aggregate(t, bad)
    with pytest.raises(InvalidInput):
        aggregate(t, ["sex"], threshold=0)
    with pytest.raises(InvalidInput, match="cells"):
        aggregate(pa.table({"x": list(range(300)), "y": list(range(300))}), ["x", "y"])
