"""In-process scorer: the same Fellegi-Sunter weights as Splink, summed with NumPy.

Owns: evaluating the definition's levels on aligned pairs of token columns (0 = missing) and
summing the trained weights. Must give Splink's match weight for the same pair (|delta| < 1e-9).
Pure: no I/O, no splink import.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from mpi.linkage.definition import Level, ModelDefinition
from mpi.linkage.params import ModelParams

Columns = Mapping[str, npt.NDArray[np.int64]]
NULL_LEVEL = -1


def _level_mask(level: Level, left: Columns, right: Columns) -> npt.NDArray[np.bool_]:
    c = level.columns
    if level.kind == "equal":
        first = left[c[0]]
        eq: npt.NDArray[np.bool_] = (first == right[c[0]]) & (first != 0)
        return eq
    if level.kind == "any_equal":
        mask = np.zeros(len(left[c[0]]), dtype=bool)
        for x in c:
            mask |= (left[x] == right[x]) & (left[x] != 0)
        return mask
    if level.kind == "all_equal":
        mask = np.ones(len(left[c[0]]), dtype=bool)
        for x in c:
            mask &= (left[x] == right[x]) & (left[x] != 0)
        return mask
    if level.kind == "cross":
        ca, cb = c
        out: npt.NDArray[np.bool_] = ((left[ca] == right[cb]) & (left[ca] != 0)) | (
            (left[cb] == right[ca]) & (left[cb] != 0))
        return out
    mask = np.zeros(len(left[c[0]]), dtype=bool)
    for x in c:
        lx = left[x]
        nz = lx != 0
        for y in c:
            mask |= (lx == right[y]) & nz
    return mask


class Scorer:
    """Scores aligned left/right records with a definition and its trained parameters."""

    def __init__(self, definition: ModelDefinition, params: ModelParams) -> None:
        self.definition = definition
        self.params = params
        self.prior_weight = params.prior_weight
        self._weights = [np.array(c.weights, dtype=np.float64) for c in params.comparisons]

    def levels(self, left: Columns, right: Columns) -> list[npt.NDArray[np.int8]]:
        """Per comparison, the level index of each pair (-1 null, len(levels) = else)."""
        out = []
        for comp in self.definition.comparisons:
            n = len(left[comp.null_columns[0]])
            idx = np.full(n, len(comp.levels), dtype=np.int8)
            for i in range(len(comp.levels) - 1, -1, -1):
                idx[_level_mask(comp.levels[i], left, right)] = i
            lnull = np.ones(n, dtype=bool)
            rnull = np.ones(n, dtype=bool)
            for c in comp.null_columns:
                lnull &= left[c] == 0
                rnull &= right[c] == 0
            null = lnull | rnull
            idx[null] = NULL_LEVEL
            out.append(idx)
        return out

    def contributions(self, left: Columns, right: Columns) -> list[npt.NDArray[np.float64]]:
        """Per comparison, the match-weight contribution of each pair (0 for null)."""
        out = []
        for weights, idx in zip(self._weights, self.levels(left, right), strict=True):
            contrib = weights[np.maximum(idx, 0)]
            contrib[idx == NULL_LEVEL] = 0.0
            out.append(contrib)
        return out

    def weights(self, left: Columns, right: Columns) -> npt.NDArray[np.float64]:
        """Match weight of each pair: prior + the sum of level weights, in Splink's order."""
        contribs = self.contributions(left, right)
        n = len(contribs[0]) if contribs else 0
        total = np.full(n, self.prior_weight, dtype=np.float64)
        for c in contribs:
            total += c
        return total
