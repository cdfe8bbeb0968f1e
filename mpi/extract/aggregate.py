"""Aggregate tables with small-cell suppression that cannot be undone from the published margins.

Owns: counting a table over 1..n dimensions (the full grid of observed levels, zeros included),
the one-way margins and grand total that are published with it, primary suppression of counts
1..threshold-1 (cells and margins alike), complementary suppression, and the audit that proves
no suppressed count can be recovered. Must not: run SQL, read the registry, or publish a value
of a suppressed count anywhere (cells, margins, report).

The attacker model of the audit: the attacker knows every published count, the grand total if
published, the table's structure (each one-way margin is the sum of its cells, the total the sum
of each margin), that counts are whole numbers, and that a suppressed count is never 0 (zeros
are always published). A suppressed count x is recovered when its attacker minimum equals its
maximum. The audit proves min < max for each by exhibiting whole counts >= 1 that fit every
published figure and give x a value other than its true one (the true counts fit too): an
integer feasibility program per count (``scipy.optimize.linprog``, HiGHS, integrality on),
checked exactly; one such solution also proves every other count it changes. When no other value
exists above or below, min = max: another count that shares a sum with x is suppressed and the
audit repeats until no suppressed count can be recovered. Cheap differencing (a sum with exactly
one suppressed term) is resolved first, the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from scipy.optimize import linprog
from scipy.sparse import csr_matrix

from mpi.errors import InvalidInput
from mpi.extract.linked_tables import PublishedTable, level_text, protect_jointly

TOTAL = "_total"
MAX_CELLS = 20_000
_CELL, _MARGIN, _TOTAL = 0, 1, 2


@dataclass
class AggregateResult:
    """Published cells and margins (null count = suppressed) and the suppression report."""

    cells: pa.Table
    margins: dict[str, pa.Table]
    report: dict[str, Any] = field(default_factory=dict)
    published: PublishedTable | None = None  # with true counts: for the registry, never a file


@dataclass
class _System:
    """All published counts as items (cells, then margin cells, then the total) and their sums."""

    values: npt.NDArray[np.int64]
    kind: npt.NDArray[np.int8]
    equations: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]]  # sum coef * x = 0
    item_equations: list[list[int]]
    suppressed: npt.NDArray[np.bool_]


def _levels(col: pa.Array) -> tuple[pa.Array, npt.NDArray[np.int64]]:
    """Sorted distinct values (null last) and each row's level index."""
    enc = pc.dictionary_encode(col, null_encoding="encode")
    order = np.asarray(pc.array_sort_indices(enc.dictionary, null_placement="at_end"))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return enc.dictionary.take(pa.array(order)), rank[np.asarray(enc.indices.cast(pa.int64()))]


def _system(counts: npt.NDArray[np.int64]) -> tuple[_System, list[int]]:
    """Items and sums for a table of ``counts`` (d-dimensional); returns the margin offsets."""
    shape, n = counts.shape, counts.size
    values = [counts.reshape(-1)]
    kinds = [np.full(n, _CELL, dtype=np.int8)]
    equations: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]] = []
    cell_index = np.arange(n).reshape(shape)
    offsets: list[int] = []
    offset = n
    if len(shape) > 1:
        for d, size in enumerate(shape):
            offsets.append(offset)
            margin = counts.sum(axis=tuple(a for a in range(len(shape)) if a != d))
            values.append(margin.astype(np.int64))
            kinds.append(np.full(size, _MARGIN, dtype=np.int8))
            for v in range(size):
                members = np.take(cell_index, v, axis=d).reshape(-1)
                equations.append((np.append(members, offset + v),
                                  np.append(np.ones(len(members)), -1.0)))
            offset += size
    total = offset
    values.append(np.array([counts.sum()], dtype=np.int64))
    kinds.append(np.array([_TOTAL], dtype=np.int8))
    if len(shape) > 1:
        for d, size in enumerate(shape):
            members = np.arange(offsets[d], offsets[d] + size)
            equations.append((np.append(members, total), np.append(np.ones(size), -1.0)))
    else:
        equations.append((np.append(np.arange(n), total), np.append(np.ones(n), -1.0)))
    all_values = np.concatenate(values)
    item_equations: list[list[int]] = [[] for _ in range(len(all_values))]
    for e, (items, _) in enumerate(equations):
        for i in items:
            item_equations[int(i)].append(e)
    system = _System(all_values, np.concatenate(kinds), equations, item_equations,
                     np.zeros(len(all_values), dtype=bool))
    return system, offsets


def _candidate(system: _System, equation_ids: Sequence[int]) -> int | None:
    """The published, nonzero item of these sums that costs least to suppress."""
    best: tuple[int, int, int] | None = None
    for e in equation_ids:
        for i in system.equations[e][0]:
            i = int(i)
            if system.suppressed[i] or system.values[i] == 0:
                continue
            key = (int(system.kind[i]), int(system.values[i]), i)
            if best is None or key < best:
                best = key
    return None if best is None else best[2]


def _component(system: _System, item: int) -> tuple[list[int], list[int]]:
    """Suppressed items linked to ``item`` through sums, and those sums."""
    items, eqs, stack = {item}, set(), [item]
    while stack:
        for e in system.item_equations[stack.pop()]:
            if e in eqs:
                continue
            eqs.add(e)
            for j in system.equations[e][0]:
                j = int(j)
                if system.suppressed[j] and j not in items:
                    items.add(j)
                    stack.append(j)
    return sorted(items), sorted(eqs)


def _program(system: _System, item: int) -> tuple[list[int], csr_matrix, npt.NDArray[np.float64]]:
    """The attacker's equations over the suppressed items linked to ``item`` (knowns moved right)."""
    items, eqs = _component(system, item)
    col = {j: c for c, j in enumerate(items)}
    rows, cols, data, rhs = [], [], [], []
    for r, e in enumerate(eqs):
        members, coefs = system.equations[e]
        known = 0.0
        for j, a in zip(members, coefs, strict=True):
            j = int(j)
            if j in col:
                rows.append(r)
                cols.append(col[j])
                data.append(a)
            else:
                known += a * float(system.values[j])
        rhs.append(-known)
    return items, csr_matrix((data, (rows, cols)), shape=(len(eqs), len(items))), np.array(rhs)


def _alternative(system: _System, item: int, *, above: bool) -> dict[int, int] | None:
    """Whole counts >= 1 that fit every published figure but give ``item`` another value.

    Solved as an integer feasibility program (HiGHS stops at the first solution found), and
    checked exactly before it is trusted; None when no such counts exist.
    """
    items, a_eq, rhs = _program(system, item)
    value = int(system.values[item])
    if not above and value - 1 < 1:
        return None
    bounds: list[tuple[float, float | None]] = [(1.0, None)] * len(items)
    bounds[items.index(item)] = (value + 1.0, None) if above else (1.0, value - 1.0)
    res = linprog(np.zeros(len(items)), A_eq=a_eq, b_eq=rhs, bounds=bounds, method="highs",
                  integrality=np.ones(len(items)))
    if res.status in (2, 4):        # infeasible (a zero objective cannot be unbounded)
        return None
    if res.status != 0:
        raise RuntimeError(f"suppression audit: solver status {res.status} ({res.message})")
    x = np.rint(res.x).astype(np.int64)
    if np.any(x < 1) or x[items.index(item)] == value or np.any(a_eq @ x != rhs):
        raise RuntimeError("suppression audit: the solver's counts do not check out exactly")
    return {j: int(v) for j, v in zip(items, x, strict=True)}


def _difference(system: _System) -> int:
    """Resolve every sum with exactly one suppressed term; returns suppressions added."""
    added, changed = 0, True
    while changed:
        changed = False
        for e, (members, _) in enumerate(system.equations):
            unknown = [int(j) for j in members if system.suppressed[j]]
            if len(unknown) != 1:
                continue
            pick = _candidate(system, [e])
            if pick is None:
                raise RuntimeError("suppression audit: a sum has one suppressed term and nothing to add")
            system.suppressed[pick] = True
            added += 1
            changed = True
    return added


def _protect(system: _System) -> dict[str, int]:
    """Complementary suppression until every suppressed item has min < max for the attacker."""
    primary = int(system.suppressed.sum())
    by_differencing = _difference(system)
    by_audit, audited, safe = 0, 0, np.zeros(len(system.values), dtype=bool)
    while True:
        pending = [int(i) for i in np.flatnonzero(system.suppressed & ~safe)]
        if not pending:
            break
        for i in pending:
            if safe[i]:
                continue
            audited += 1
            other = _alternative(system, i, above=True) or _alternative(system, i, above=False)
            if other is not None:
                # every item these counts change has two feasible values: min < max for each.
                # More suppression only widens the attacker's range, so they stay safe.
                for j, v in other.items():
                    safe[j] = safe[j] or v != system.values[j]
                continue
            _, eqs = _component(system, i)
            pick = _candidate(system, system.item_equations[i])
            pick = _candidate(system, eqs) if pick is None else pick
            if pick is None:
                raise RuntimeError("suppression audit: no published count left to suppress")
            system.suppressed[pick] = True
            by_audit += 1
            by_differencing += _difference(system)
            break
    return {"primary": primary, "complementary_by_differencing": by_differencing,
            "complementary_by_audit": by_audit, "audit_solves": audited}


def _published(values: npt.NDArray[np.int64], suppressed: npt.NDArray[np.bool_]) -> tuple[pa.Array, pa.Array]:
    return (pa.array(values, type=pa.int64(), mask=suppressed), pa.array(suppressed, type=pa.bool_()))


def aggregate(table: pa.Table, dimensions: Sequence[str], *, threshold: int = 11,
              linked: Sequence[PublishedTable] | None = None,
              population: str = "") -> AggregateResult:
    """Counts over the dimensions with primary and complementary suppression, LP-audited;
    with ``linked`` (tables already released to the researcher, possibly none), also protected
    jointly with them (mpi/extract/linked_tables.py, Decision 77)."""
    dims = list(dimensions)
    if not dims or len(set(dims)) != len(dims):
        raise InvalidInput("aggregate needs one or more distinct dimensions")
    for d in dims:
        if d not in table.column_names:
            raise InvalidInput(f"dimension {d!r} is not in the table")
    if not isinstance(threshold, int) or threshold < 1:
        raise InvalidInput("threshold must be a positive integer")
    levels, index = zip(*(_levels(table.column(d).combine_chunks()) for d in dims), strict=True)
    shape = tuple(len(lv) or 1 for lv in levels)
    if int(np.prod(shape)) > MAX_CELLS:
        raise InvalidInput(f"the table would have {int(np.prod(shape))} cells; at most {MAX_CELLS} "
                           "(use fewer dimensions or coarser generalizations)")
    flat = np.ravel_multi_index(index, shape) if table.num_rows else np.zeros(0, dtype=np.int64)
    counts = np.bincount(flat, minlength=int(np.prod(shape))).astype(np.int64).reshape(shape)
    system, offsets = _system(counts)
    system.suppressed[:] = (system.values >= 1) & (system.values < threshold)
    stats: dict[str, Any] = dict(_protect(system))
    published = None
    if linked is not None:
        published, stats["joint"] = protect_jointly(PublishedTable(
            dims=tuple(dims), levels=tuple(tuple(level_text(v) for v in lv.to_pylist()) or (None,)
                                           for lv in levels),
            values=tuple(int(v) for v in system.values),
            suppressed=tuple(bool(s) for s in system.suppressed), population=population), linked,
            threshold=threshold)
        system.suppressed[:] = published.suppressed
    n = counts.size
    grid = np.unravel_index(np.arange(n), shape)
    cell_cols = {d: levels[a].take(pa.array(grid[a])) if len(levels[a]) else pa.nulls(n)
                 for a, d in enumerate(dims)}
    count, flag = _published(system.values[:n], system.suppressed[:n])
    cells = pa.table({**cell_cols, "count": count, "suppressed": flag})
    margins: dict[str, pa.Table] = {}
    for a, d in enumerate(dims):
        if len(dims) == 1:
            margins[d] = cells
            continue
        sl = slice(offsets[a], offsets[a] + shape[a])
        count, flag = _published(system.values[sl], system.suppressed[sl])
        margins[d] = pa.table({d: levels[a] if len(levels[a]) else pa.nulls(1), "count": count,
                               "suppressed": flag})
    count, flag = _published(system.values[-1:], system.suppressed[-1:])
    margins[TOTAL] = pa.table({"count": count, "suppressed": flag})
    kinds = system.kind
    primary = (system.values >= 1) & (system.values < threshold)
    report = {
        "threshold": threshold, "cells": n, "zero_cells": int((counts == 0).sum()),
        "cells_suppressed_primary": int((primary & (kinds == _CELL)).sum()),
        "cells_suppressed_complementary": int((system.suppressed & ~primary & (kinds == _CELL)).sum()),
        "margins_suppressed_primary": int((primary & (kinds != _CELL)).sum()),
        "margins_suppressed_complementary": int((system.suppressed & ~primary & (kinds != _CELL)).sum()),
        "audit": {"method": "per suppressed count, an integer feasibility program (scipy linprog, "
                            "HiGHS) finds whole counts >= 1 that fit every published cell, margin and "
                            "total with that count changed; so every suppressed count has attacker "
                            "min < max",
                  **stats},
    }
    return AggregateResult(cells=cells, margins=margins, report=report, published=published)
