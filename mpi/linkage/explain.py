"""Why two records score as they do: per comparison, the agreement level and its match weight.

Owns: explaining one record pair under a model definition and its trained parameters, with the
same level evaluation as the in-process scorer (scorer.py), so the waterfall sums exactly to
the scorer's total match weight, and what else was checked: when no level agrees, each level
is named as differing or not comparable (a token missing on a side), and a date of birth is
described by its parts (year, month and day, one digit) so a one-digit typo never reads like a
date 30 years off. The output names comparisons, levels and parts only: it never holds a
token value. Pure: no I/O, no splink import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mpi.linkage.definition import Comparison, Level, ModelDefinition
from mpi.linkage.params import ModelParams, probability
from mpi.linkage.scorer import NULL_LEVEL, Scorer, level_holds

NULL_LABEL = "null (missing on one side)"
ELSE_LABEL = "else (no level agrees)"


@dataclass(frozen=True)
class ComparisonExplanation:
    """One comparison's agreement level (index, label) and its match-weight contribution."""

    comparison: str
    level: int  # -1 null, 0.. definition levels in order, len(levels) = else
    label: str
    match_weight: float
    agrees: bool  # a defined level agreed (neither null nor else)
    detail: str | None = None  # what was checked: levels when none agrees, a date's parts


@dataclass(frozen=True)
class PairExplanation:
    """The prior, each comparison's contribution, and the totals; no token values."""

    prior_weight: float
    comparisons: tuple[ComparisonExplanation, ...]
    match_weight: float
    match_probability: float

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-ready form (a waterfall: prior first, then each comparison)."""
        return {
            "prior_weight": self.prior_weight,
            "comparisons": [
                {"comparison": c.comparison, "level": c.level, "label": c.label,
                 "match_weight": c.match_weight, "agrees": c.agrees, "detail": c.detail}
                for c in self.comparisons],
            "match_weight": self.match_weight,
            "match_probability": self.match_probability,
        }


def _comparable(level: Level, left: Mapping[str, int], right: Mapping[str, int]) -> bool:
    """Whether a level's tokens are there on both sides (else its test cannot hold)."""
    cols = (level.columns if level.kind in ("all_equal", "cross", "similar_swapped")
            else level.columns[:1])
    if level.kind in ("any_equal", "overlap"):
        return any(left.get(c, 0) and right.get(c, 0) for c in level.columns)
    return all(left.get(c, 0) and right.get(c, 0) for c in cols)


def _eq(left: Mapping[str, int], right: Mapping[str, int], col: str) -> bool | None:
    a, b = int(left.get(col, 0) or 0), int(right.get(col, 0) or 0)
    return None if a == 0 or b == 0 else a == b


_DOB_MASK_PREFIX = "date_of_birth_mask"


def dob_parts(left: Mapping[str, int], right: Mapping[str, int]) -> str | None:
    """A date of birth's agreement by parts (year, month, day; one digit), from the part
    tokens; None when the part tokens are missing."""
    y = _eq(left, right, "date_of_birth_year")
    ym = _eq(left, right, "date_of_birth_year_month")
    md = _eq(left, right, "date_of_birth_month_day")
    yd = _eq(left, right, "date_of_birth_year_day")
    parts: list[str] = []
    if y is True:
        parts.append("year equal")
        if ym is not None:
            parts.append("month equal" if ym else "month differs")
        if yd is not None:
            parts.append("day equal" if yd else "day differs")
    elif y is False:
        parts.append("year differs")
        if md is not None:
            parts.append("month and day equal" if md else "month or day differs too")
    masks = [_eq(left, right, c) for c in sorted({*left, *right})
             if c.startswith(_DOB_MASK_PREFIX)]
    known = [m for m in masks if m is not None]
    if known and _eq(left, right, "date_of_birth") is False:
        parts.append("exactly one digit differs" if any(known) else "more than one digit differs")
    return "; ".join(parts) or None


def _detail(comp: Comparison, i: int, left: Mapping[str, int],
            right: Mapping[str, int]) -> str | None:
    """What was checked for one comparison beyond the level that fired."""
    parts = None
    if comp.name == "date_of_birth" and i != NULL_LEVEL and i != 0:
        parts = dob_parts(left, right)
    if i != len(comp.levels):
        return parts
    checked = [f"{lvl.label}: " + ("differs" if _comparable(lvl, left, right)
                                    else "not comparable (missing on a side)")
               for lvl in comp.levels if not level_holds(lvl, _full(left, lvl), _full(right, lvl))]
    text = "no level agrees (" + "; ".join(checked) + ")"
    return f"{text}; {parts}" if parts else text


def _full(row: Mapping[str, int], level: Level) -> dict[str, int]:
    return {c: int(row.get(c, 0) or 0) for c in level.columns}


def _column(row: Mapping[str, int], name: str) -> npt.NDArray[Any]:
    return np.array([int(row.get(name, 0) or 0)], dtype=np.int64)


def explain_pair(left: Mapping[str, int], right: Mapping[str, int], *, definition: ModelDefinition,
                 params: ModelParams) -> PairExplanation:
    """Explain one pair of token rows (model column -> int64 token, 0 or absent = missing)."""
    return explain_with(left, right, scorer=Scorer(definition, params))


def explain_with(left: Mapping[str, int], right: Mapping[str, int], *,
                 scorer: Scorer) -> PairExplanation:
    """As ``explain_pair`` with a scorer already built (cheaper for many pairs)."""
    cols = scorer.definition.columns()
    lcols = {c: _column(left, c) for c in cols}
    rcols = {c: _column(right, c) for c in cols}
    levels = scorer.levels(lcols, rcols)
    contribs = scorer.contributions(lcols, rcols)
    parts = []
    total = np.full(1, scorer.prior_weight, dtype=np.float64)
    for comp, idx, contrib in zip(scorer.definition.comparisons, levels, contribs, strict=True):
        i = int(idx[0])
        if i == NULL_LEVEL:
            label = NULL_LABEL
        elif i == len(comp.levels):
            label = ELSE_LABEL
        else:
            label = comp.levels[i].label
        total += contrib
        parts.append(ComparisonExplanation(comp.name, i, label, float(contrib[0]),
                                           0 <= i < len(comp.levels),
                                           _detail(comp, i, left, right)))
    weight = float(total[0])
    return PairExplanation(scorer.prior_weight, tuple(parts), weight, probability(weight))
