"""Model sanity: within a comparison, a stronger agreement never weighs less than a weaker one.

Owns: which levels of a comparison are stronger than which (a partial order derived from the
level predicates and the token contract), finding trained weights that break it, and pooling
the m/u of the offending levels so that they do not (isotonic regression by pooling adjacent
violators). Pure: no I/O, no splink import.

Level A is stronger than level B when every pair that satisfies A's predicate also satisfies
B's (A agrees on everything B asks for, e.g. "address line and phone equal" is stronger than
"phone equal", "SSN equal" than "SSN equal on a masked variant"), and every agreement level is
stronger than "else" (no level agrees). Levels that do not imply each other (e.g. "names
swapped" and "phonetic equal") are not ordered: their weights are free. Decision 89.

Must not: reorder levels or change which level a pair falls in; only m (never u) moves.
"""

from __future__ import annotations

import math
from typing import Any

from mpi.agency.schema import FIELDS, column_name, token_name
from mpi.linkage.definition import Comparison, Level, ModelDefinition
from mpi.linkage.params import ModelParams

# Variants that are not a function of their field's value alone: the unordered name pair and
# its similarity token need both names; the swapped date is compared across columns (a ``cross`` level).
_NOT_DERIVED = {"name_set", "name_set_bloom", "swap"}
_DERIVED: dict[str, frozenset[str]] = {
    f.name: frozenset(column_name(token_name(f.name, v.name)) for v in f.variants
                      if v.name not in _NOT_DERIVED)
    for f in FIELDS
}
TOLERANCE = 1e-9  # weights closer than this are equal


def _certain(level: Level) -> frozenset[str]:
    """Columns certainly equal on both sides of every pair that satisfies ``level``."""
    if level.kind in ("equal", "equal_unknown"):
        cols: tuple[str, ...] = level.columns[:1]
    elif level.kind == "all_equal":
        cols = level.columns
    else:  # any_equal, overlap, cross, similar(_swapped): no one column is certain
        return frozenset()
    out: set[str] = set()
    for c in cols:
        out |= {c} | _DERIVED.get(c, frozenset())
    return frozenset(out)


def implies(a: Level, b: Level) -> bool:
    """True when every pair that satisfies ``a`` also satisfies ``b`` (conservatively)."""
    agree = _certain(a)
    if b.kind == "equal":
        return b.columns[0] in agree
    if b.kind == "all_equal":
        return set(b.columns) <= agree
    if b.kind in ("any_equal", "overlap"):  # overlap compares every pair, so also x_l = x_r
        return any(c in agree for c in b.columns)
    if b.kind == "similar":  # equal filters have Dice 1 (or 0 >= 0 when both are empty)
        return b.columns[0] in agree
    return False  # cross needs a swapped date; equal_unknown needs a missing field


def stronger_pairs(comparison: Comparison) -> list[tuple[int, int]]:
    """(stronger, weaker) level indices of a comparison; index ``len(levels)`` is "else"."""
    n = len(comparison.levels)
    out = [(i, j) for i, a in enumerate(comparison.levels)
           for j, b in enumerate(comparison.levels) if i != j and implies(a, b)]
    out += [(i, n) for i in range(n)]
    return out


def _labels(comparison: Comparison) -> list[str]:
    return [lv.label for lv in comparison.levels] + ["else"]


def violations(definition: ModelDefinition, params: ModelParams) -> list[dict[str, Any]]:
    """Every (stronger, weaker) level pair whose trained weights are in the wrong order."""
    by_name = {c.name: c for c in params.comparisons}
    out: list[dict[str, Any]] = []
    for comp in definition.comparisons:
        w = by_name[comp.name].weights
        labels = _labels(comp)
        for i, j in stronger_pairs(comp):
            if w[i] < w[j] - TOLERANCE:
                out.append({"comparison": comp.name, "stronger": labels[i],
                            "stronger_weight": w[i], "weaker": labels[j], "weaker_weight": w[j]})
    return out


def pool(m: list[float], u: list[float], pairs: list[tuple[int, int]]) -> list[float]:
    """New m values such that w[i] >= w[j] for every (i, j) in ``pairs``, w = log2(m/u).

    Pools adjacent violators: while some pair is out of order, the blocks holding its two
    levels merge and every level of the merged block gets the block's likelihood ratio
    sum(m) / sum(u) (m_k = u_k * ratio, so the block's total m, and every u, are kept). On a
    chain of levels this is the pool-adjacent-violators isotonic fit of the ratio, weighted
    by u; on a partial order it is a feasible fit that only pools what must be pooled.
    """
    block = list(range(len(m)))  # level -> block id

    def ratio(b: int) -> float:
        idx = [k for k in range(len(m)) if block[k] == b]
        return sum(m[k] for k in idx) / sum(u[k] for k in idx)

    while True:
        bad = next(((i, j) for i, j in pairs if block[i] != block[j]
                    and math.log2(ratio(block[i])) < math.log2(ratio(block[j])) - TOLERANCE),
                   None)
        if bad is None:
            break
        old, new = block[bad[1]], block[bad[0]]
        block = [new if b == old else b for b in block]
    out = list(m)
    for b in set(block):
        idx = [k for k in range(len(m)) if block[k] == b]
        if len(idx) > 1:
            r = ratio(b)
            for k in idx:
                out[k] = u[k] * r
    return out


def enforce_monotone(model: dict[str, Any], definition: ModelDefinition) -> list[str]:
    """Pool the m values of a trained Splink model dict (in place) so that no stronger level
    weighs less than a weaker one; returns ``comparison: level, level`` of every pooled block."""
    saved = {c.get("output_column_name"): c for c in model.get("comparisons", [])}
    done: list[str] = []
    for comp in definition.comparisons:
        raw = saved.get(comp.name)
        if raw is None:
            continue
        levels = [lv for lv in raw["comparison_levels"] if not lv.get("is_null_level")]
        if len(levels) != len(comp.levels) + 1:
            continue  # params_from_splink refuses such a model with a clear message
        raw_mu = [(lv.get("m_probability"), lv.get("u_probability")) for lv in levels]
        if not all(isinstance(x, int | float) and x > 0 for pair in raw_mu for x in pair):
            continue  # an untrained level: training fills or neutralizes it first
        m = [float(a) for a, _ in raw_mu]
        u = [float(b) for _, b in raw_mu]
        new = pool(m, u, stronger_pairs(comp))
        changed = [k for k in range(len(m)) if new[k] != m[k]]
        if not changed:
            continue
        for k in changed:
            levels[k]["m_probability"] = new[k]
        labels = _labels(comp)
        done.append(f"{comp.name}: " + ", ".join(labels[k] for k in changed))
    return done
