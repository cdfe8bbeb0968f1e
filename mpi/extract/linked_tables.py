"""Joint protection of every aggregate table released to one researcher (Decision 77).

Owns: ``PublishedTable`` (one released table: dimensions, levels, true counts and which are
suppressed, the population it counts), its JSON form, the joint system an attacker writes over
all tables a researcher holds, the integer-program attacker's range of every suppressed count
in that system, and ``protect_jointly``, which suppresses more of a new table until no
suppressed count of any table is narrowed below the protection width. Must not: run SQL, read
the registry, or publish a suppressed count (its true value only lives in the registry file).

The attacker model: the attacker holds every published count of every table, knows each
table's own sums (cells to margins to total), that counts are whole and a suppressed count is
never 0 (zeros are published), and, for two tables over the same population (the same person
set), how their shared sums relate: for the dimensions they share, the sum of one table's cells
in each combination equals the other's plus their true difference (zero unless a person holds
several values of a dimension one table has and the other lacks; the attacker may know more
than a real one would, never less). For each suppressed count x the attacker computes its
whole-number min and max over all that (``scipy.optimize.milp``, HiGHS). The protection:
``max - min >= PROTECTION_WIDTH`` (three or more values stay possible), or, for a count of an
earlier release that was narrower on its own, no narrower than it was.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_matrix

from mpi.errors import Conflict

PROTECTION_WIDTH = 2
_CELL, _MARGIN, _TOTAL = 0, 1, 2
Level = str | None
Equation = tuple[list[int], list[float], float]  # sum coef * x = const over items


@dataclass(frozen=True)
class PublishedTable:
    """One released table: item order is cells (row-major over ``levels``), then one margin
    per dimension (when there are two or more), then the total."""

    dims: tuple[str, ...]
    levels: tuple[tuple[Level, ...], ...]
    values: tuple[int, ...]        # true counts (never published where suppressed)
    suppressed: tuple[bool, ...]
    population: str                # digest of the person set it counts

    @property
    def shape(self) -> tuple[int, ...]:
        """Cells per dimension."""
        return tuple(len(lv) for lv in self.levels)

    def kinds(self) -> list[int]:
        """Cell, margin or total, per item."""
        n = math.prod(self.shape)
        margins = sum(self.shape) if len(self.dims) > 1 else 0
        return [_CELL] * n + [_MARGIN] * margins + [_TOTAL]


def level_text(value: Any) -> Level:
    """A level as it is compared across tables (text; null stays null)."""
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def population_id(person_keys: Iterable[str]) -> str:
    """A digest naming a person set (equal sets, equal digests); kept in the registry only."""
    h = hashlib.sha256()
    for key in sorted(set(person_keys)):
        h.update(key.encode())
        h.update(b"\n")
    return h.hexdigest()


def dumps(tables: Sequence[PublishedTable]) -> str:
    """The JSON text stored for a build's tables."""
    return json.dumps([{"dims": t.dims, "levels": t.levels, "values": t.values,
                        "suppressed": t.suppressed} for t in tables], sort_keys=True)


def loads(population: str, text: str) -> list[PublishedTable]:
    """Tables back from ``dumps``."""
    return [PublishedTable(dims=tuple(t["dims"]), levels=tuple(tuple(lv) for lv in t["levels"]),
                           values=tuple(int(v) for v in t["values"]),
                           suppressed=tuple(bool(s) for s in t["suppressed"]),
                           population=population) for t in json.loads(text)]


# ---- the joint system -------------------------------------------------------------------------
def _internal(t: PublishedTable, base: int) -> list[Equation]:
    """A table's own sums, items numbered from ``base``."""
    shape = t.shape
    n = math.prod(shape)
    cell = np.arange(n).reshape(shape) + base
    total = base + len(t.values) - 1
    out: list[Equation] = []
    if len(shape) == 1:
        return [([*cell.tolist(), total], [1.0] * n + [-1.0], 0.0)]
    offset = base + n
    for d, size in enumerate(shape):
        for v in range(size):
            members = np.take(cell, v, axis=d).reshape(-1).tolist()
            out.append(([*members, offset + v], [1.0] * len(members) + [-1.0], 0.0))
        out.append(([*range(offset, offset + size), total], [1.0] * size + [-1.0], 0.0))
        offset += size
    return out


def _projections(t: PublishedTable, shared: Sequence[str]) -> dict[tuple[Level, ...], list[int]]:
    """Cell indices of ``t`` by their levels of the shared dimensions."""
    axes = [t.dims.index(d) for d in shared]
    out: dict[tuple[Level, ...], list[int]] = {}
    for flat, idx in enumerate(np.ndindex(*t.shape)):
        key = tuple(t.levels[a][idx[a]] for a in axes)
        out.setdefault(key, []).append(flat)
    return out


def _cross(a: PublishedTable, base_a: int, b: PublishedTable, base_b: int) -> list[Equation]:
    """The sums two tables over the same persons share, with their true difference (zero
    unless persons hold several values of a dimension one table has and the other lacks)."""
    if a.population != b.population:
        return []
    shared = [d for d in a.dims if d in b.dims]
    if not shared:
        ta, tb = base_a + len(a.values) - 1, base_b + len(b.values) - 1
        return [([ta, tb], [1.0, -1.0], float(a.values[-1] - b.values[-1]))]
    pa_, pb_ = _projections(a, shared), _projections(b, shared)
    out: list[Equation] = []
    for key in sorted(set(pa_) | set(pb_), key=repr):
        ia, ib = pa_.get(key, []), pb_.get(key, [])
        delta = sum(a.values[i] for i in ia) - sum(b.values[i] for i in ib)
        out.append(([base_a + i for i in ia] + [base_b + i for i in ib],
                    [1.0] * len(ia) + [-1.0] * len(ib), float(delta)))
    return out


@dataclass
class _Joint:
    values: npt.NDArray[np.int64]
    suppressed: npt.NDArray[np.bool_]
    kind: npt.NDArray[np.int8]
    table: npt.NDArray[np.int64]     # which table each item belongs to
    equations: list[Equation]
    item_equations: list[list[int]]


def _joint(tables: Sequence[PublishedTable]) -> _Joint:
    bases, base = [], 0
    for t in tables:
        bases.append(base)
        base += len(t.values)
    equations: list[Equation] = []
    for t, b in zip(tables, bases, strict=True):
        equations += _internal(t, b)
    for i, (t, b) in enumerate(zip(tables, bases, strict=True)):
        for u, c in zip(tables[i + 1:], bases[i + 1:], strict=True):
            equations += _cross(t, b, u, c)
    item_equations: list[list[int]] = [[] for _ in range(base)]
    for e, (items, _, _) in enumerate(equations):
        for j in items:
            item_equations[j].append(e)
    return _Joint(
        values=np.array([v for t in tables for v in t.values], dtype=np.int64),
        suppressed=np.array([s for t in tables for s in t.suppressed], dtype=bool),
        kind=np.array([k for t in tables for k in t.kinds()], dtype=np.int8),
        table=np.array([i for i, t in enumerate(tables) for _ in t.values], dtype=np.int64),
        equations=equations, item_equations=item_equations)


def _component(j: _Joint, item: int) -> tuple[list[int], list[int]]:
    """Suppressed items linked to ``item`` through sums, and those sums."""
    items, eqs, stack = {item}, set(), [item]
    while stack:
        for e in j.item_equations[stack.pop()]:
            if e in eqs:
                continue
            eqs.add(e)
            for x in j.equations[e][0]:
                if j.suppressed[x] and x not in items:
                    items.add(x)
                    stack.append(x)
    return sorted(items), sorted(eqs)


def attacker_range(j: _Joint, item: int,
                   seen: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None
                   ) -> tuple[float, float]:
    """The attacker's whole-number min and max of a suppressed item (max may be inf); with
    ``seen``, widen each item's lowest and highest value seen by the two solutions found."""
    items, eqs = _component(j, item)
    col = {x: c for c, x in enumerate(items)}
    rows, cols, data, rhs = [], [], [], []
    for r, e in enumerate(eqs):
        members, coefs, const = j.equations[e]
        known = -const
        for x, a in zip(members, coefs, strict=True):
            if x in col:
                rows.append(r)
                cols.append(col[x])
                data.append(a)
            else:
                known += a * float(j.values[x])
        rhs.append(-known)
    n = len(items)
    if not eqs:
        if seen is not None:
            seen[1][item] = math.inf
        return 1.0, math.inf
    a_eq = csr_matrix((data, (rows, cols)), shape=(len(eqs), n))
    rhs_arr = np.array(rhs)
    cons = LinearConstraint(a_eq, rhs_arr, rhs_arr)
    bounds = Bounds(np.ones(n), np.full(n, np.inf))
    c = np.zeros(n)
    c[col[item]] = 1.0
    out: list[float] = []
    for sign in (1.0, -1.0):
        res = milp(sign * c, constraints=cons, bounds=bounds, integrality=np.ones(n))
        # unbounded (only ever for the max; 4 is "infeasible or unbounded", and the true
        # counts are always feasible)
        if sign < 0 and res.status in (3, 4):
            out.append(math.inf)
            if seen is not None:
                seen[1][item] = math.inf
            continue
        if res.status != 0 or res.x is None:
            raise RuntimeError(f"linked-table audit: solver status {res.status} ({res.message})")
        x = np.rint(res.x)
        if seen is not None:  # every solution is whole counts that fit: each value is possible
            idx = np.array(items)
            seen[0][idx] = np.minimum(seen[0][idx], x)
            seen[1][idx] = np.maximum(seen[1][idx], x)
        out.append(float(x[col[item]]))
    return out[0], out[1]


def _candidate(j: _Joint, equation_ids: Iterable[int], new_table: int) -> int | None:
    """The published, nonzero item of the new table in these sums that costs least to suppress."""
    best: tuple[int, int, int] | None = None
    for e in equation_ids:
        for x in j.equations[e][0]:
            if j.table[x] != new_table or j.suppressed[x] or j.values[x] == 0:
                continue
            key = (int(j.kind[x]), int(j.values[x]), x)
            if best is None or key < best:
                best = key
    return None if best is None else best[2]


def _publish_implied(j: _Joint, first_new: int, *, threshold: int,
                     seen: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]) -> int:
    """Publish the new table's suppressed counts that earlier tables pin down (the attacker
    gains nothing); Conflict when one of them is below the threshold."""
    published = 0
    for x in [int(x) for x in np.flatnonzero(j.suppressed)]:
        if x < first_new or seen[1][x] > seen[0][x]:
            continue
        lo, hi = attacker_range(j, x, seen)
        if hi > lo:
            continue
        if j.values[x] < threshold:
            raise Conflict("a small count of this aggregate table is already determined by "
                           "tables released earlier to this researcher; request other "
                           "dimensions")
        j.suppressed[x] = False  # implied by what is published
        published += 1
    return published


def protect_jointly(new: PublishedTable, earlier: Sequence[PublishedTable], *, threshold: int,
                    width: int = PROTECTION_WIDTH) -> tuple[PublishedTable, dict[str, Any]]:
    """``new`` with more of its counts suppressed until, over it and every earlier table, each
    suppressed count's attacker range is at least ``width`` wide (an earlier count that was
    narrower on its own: no narrower than that). A suppressed count of ``threshold`` or more
    that earlier tables already pin down is published (it tells nothing new). Raises Conflict
    when suppressing all of the new table's counts in reach would not do, or when earlier
    tables already pin down a count below ``threshold`` of this one."""
    j = _joint([*earlier, new])
    new_table = len(earlier)
    first_new = len(j.values) - len(new.values)
    # What each count can be asked for, worked out only for a count found narrower than
    # ``width``: an earlier count, no narrower than the earlier tables alone leave it; a count
    # of the new table, no narrower than with the whole new table suppressed (what earlier
    # tables already pin down cannot be hidden by this one).
    before = _joint(earlier) if earlier else None
    best = _joint([*earlier, replace(new, suppressed=tuple(
        s or v > 0 for s, v in zip(new.suppressed, new.values, strict=True)))]) if earlier else None
    need: dict[int, float] = {}

    def required(x: int) -> float:
        if x not in need:
            lo, hi = (0.0, math.inf) if before is None or best is None else \
                attacker_range(before, x) if x < first_new else attacker_range(best, x)
            need[x] = min(float(width), hi - lo)
        return need[x]

    added, solves, ok = 0, 0, np.zeros(len(j.values), dtype=bool)
    # values each count is known to take in some whole-number solution (its true one first);
    # they stay possible when more is suppressed, so a wide enough spread needs no solve
    seen = (j.values.astype(np.float64), j.values.astype(np.float64))
    while True:
        pending = [int(x) for x in np.flatnonzero(j.suppressed & ~ok)]
        if not pending:
            break
        for x in pending:
            if seen[1][x] - seen[0][x] >= width:
                ok[x] = True
                continue
            lo, hi = attacker_range(j, x, seen)
            solves += 2
            if hi - lo >= width or hi - lo >= required(x):
                ok[x] = True  # more suppression only widens ranges: it stays protected
                continue
            _, eqs = _component(j, x)
            pick = _candidate(j, j.item_equations[x], new_table)
            pick = _candidate(j, eqs, new_table) if pick is None else pick
            if pick is None:
                raise Conflict("this aggregate table cannot be released without narrowing a "
                               "suppressed count of a table already released to this researcher "
                               "(request coarser dimensions or other ones)")
            j.suppressed[pick] = True
            added += 1
            break
    published = _publish_implied(j, first_new, threshold=threshold, seen=seen)
    mask = tuple(bool(s) for s in j.suppressed[first_new:])
    stats = {"method": "every aggregate table released to this researcher is protected jointly: "
                       "an integer program per suppressed count (scipy milp, HiGHS) over all their "
                       "published counts, each table's sums and the equal sums of tables over the "
                       "same persons finds the attacker's min and max; counts of this table are "
                       "suppressed until every range is at least the protection width",
             "protection_width": width, "earlier_tables": len(earlier),
             "linked_tables": sum(1 for t in earlier if t.population == new.population),
             "suppressed_for_linked_tables": added,
             "published_as_implied_by_earlier_tables": published, "solves": solves}
    return replace(new, suppressed=mask), stats


def attack(tables: Sequence[PublishedTable]) -> dict[int, tuple[float, float]]:
    """The attacker's range of every suppressed item of the joint system (for reports/tests)."""
    j = _joint(tables)
    return {int(x): attacker_range(j, int(x)) for x in np.flatnonzero(j.suppressed)}
