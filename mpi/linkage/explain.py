"""Why two records score as they do: per comparison, the agreement level and its match weight.

Owns: explaining one record pair under a model definition and its trained parameters, with the
same level evaluation as the in-process scorer (scorer.py), so the waterfall sums exactly to
the scorer's total match weight. The output names comparisons and levels only: it never holds a
token value. Pure: no I/O, no splink import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mpi.linkage.definition import ModelDefinition
from mpi.linkage.params import ModelParams, probability
from mpi.linkage.scorer import NULL_LEVEL, Scorer

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
                 "match_weight": c.match_weight, "agrees": c.agrees}
                for c in self.comparisons],
            "match_weight": self.match_weight,
            "match_probability": self.match_probability,
        }


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
                                           0 <= i < len(comp.levels)))
    weight = float(total[0])
    return PairExplanation(scorer.prior_weight, tuple(parts), weight, probability(weight))
