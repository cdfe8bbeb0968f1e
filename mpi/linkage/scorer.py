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
    if level.kind == "equal_unknown":
        head = left[c[0]]
        known: npt.NDArray[np.bool_] = (head == right[c[0]]) & (head != 0)
        for x in c[1:]:
            known &= (left[x] == 0) | (right[x] == 0)
        return known
    if level.kind == "similar":
        return _dice_mask(left[c[0]], right[c[0]], level.percent)
    if level.kind == "similar_swapped":
        swapped = _dice_mask(left[c[0]], right[c[0]], level.percent)
        for x in c[1:]:  # each other filter present on both sides and not similar
            swapped &= ~_dice_mask(left[x], right[x], level.percent) & (left[x] != 0) & (
                right[x] != 0)
        return swapped

    mask = np.zeros(len(left[c[0]]), dtype=bool)
    for x in c:
        lx = left[x]
        nz = lx != 0
        for y in c:
            mask |= (lx == right[y]) & nz
    return mask


def _dice_mask(lx: npt.NDArray[np.int64], rx: npt.NDArray[np.int64],
               percent: int) -> npt.NDArray[np.bool_]:
    """Dice of two similarity-token columns >= percent / 100, both present."""
    # as unsigned: NumPy counts the bits of a signed value's magnitude, SQL its 64 bits
    ux, uy = lx.view(np.uint64), rx.view(np.uint64)
    common = np.bitwise_count(ux & uy).astype(np.int64)
    total = np.bitwise_count(ux).astype(np.int64) + np.bitwise_count(uy)
    sim: npt.NDArray[np.bool_] = (200 * common >= percent * total) & (ux != 0) & (uy != 0)
    return sim


_U64 = (1 << 64) - 1


def _dice_holds(lv: int, rv: int, percent: int) -> bool:
    lx, rx = lv & _U64, rv & _U64
    return lx != 0 and rx != 0 and (
        200 * (lx & rx).bit_count() >= percent * (lx.bit_count() + rx.bit_count()))


def _level_holds(kind: str, c: tuple[str, ...], left: Mapping[str, int],
                 right: Mapping[str, int], percent: int = 0) -> bool:
    """``_level_mask`` for one pair, in plain Python (same predicates, same order)."""
    if kind == "equal":
        v = left[c[0]]
        return v != 0 and v == right[c[0]]
    if kind == "any_equal":
        return any(left[x] != 0 and left[x] == right[x] for x in c)
    if kind == "all_equal":
        return all(left[x] != 0 and left[x] == right[x] for x in c)
    if kind == "cross":
        ca, cb = c
        return (left[ca] != 0 and left[ca] == right[cb]) or (left[cb] != 0 and left[cb] == right[ca])
    if kind == "equal_unknown":
        v = left[c[0]]
        return v != 0 and v == right[c[0]] and all(left[x] == 0 or right[x] == 0 for x in c[1:])
    if kind == "similar":
        return _dice_holds(left[c[0]], right[c[0]], percent)
    if kind == "similar_swapped":
        return _dice_holds(left[c[0]], right[c[0]], percent) and all(
            left[x] != 0 and right[x] != 0 and not _dice_holds(left[x], right[x], percent)
            for x in c[1:])
    return any(left[x] != 0 and left[x] == right[y] for x in c for y in c)


def level_holds(level: Level, left: Mapping[str, int], right: Mapping[str, int]) -> bool:
    """Whether one level's test holds for one pair of token rows (0 = missing)."""
    return _level_holds(level.kind, level.columns, left, right, level.percent)


_FEW_PAIRS = 24  # up to this many pairs, plain Python beats NumPy's per-call set-up


class Scorer:
    """Scores aligned left/right records with a definition and its trained parameters."""

    def __init__(self, definition: ModelDefinition, params: ModelParams) -> None:
        self.definition = definition
        self.params = params
        self.prior_weight = params.prior_weight
        self._weights = [np.array(c.weights, dtype=np.float64) for c in params.comparisons]
        # The same levels and weights as plain Python values, for scoring a few pairs.
        self._plan = [(comp.null_columns,
                       [(lvl.kind, lvl.columns, lvl.percent) for lvl in comp.levels],
                       [float(w) for w in weights])
                      for comp, weights in zip(definition.comparisons, self._weights, strict=True)]

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
        first = next(iter(left.values()), None)
        if first is not None and len(first) <= _FEW_PAIRS:
            return self._weights_few(left, right, len(first))
        contribs = self.contributions(left, right)
        n = len(contribs[0]) if contribs else 0
        total = np.full(n, self.prior_weight, dtype=np.float64)
        for c in contribs:
            total += c
        return total

    def _weights_few(self, left: Columns, right: Columns, n: int) -> npt.NDArray[np.float64]:
        """``weights`` for a few pairs: the same levels and the same float additions, in order
        (so the sums are bit-identical to the array path's)."""
        cols = self.definition.columns()
        lrows = [dict(zip(cols, vals, strict=True))
                 for vals in zip(*(left[c].tolist() for c in cols), strict=True)]
        rrows = [dict(zip(cols, vals, strict=True))
                 for vals in zip(*(right[c].tolist() for c in cols), strict=True)]
        out = np.empty(n, dtype=np.float64)
        for k, (lv, rv) in enumerate(zip(lrows, rrows, strict=True)):
            total = self.prior_weight
            for null_cols, levels, weights in self._plan:
                if all(lv[c] == 0 for c in null_cols) or all(rv[c] == 0 for c in null_cols):
                    total += 0.0  # the array path adds a 0.0 contribution: keep the same sum
                    continue
                level = len(levels)
                for i, (kind, c, percent) in enumerate(levels):
                    if _level_holds(kind, c, lv, rv, percent):
                        level = i
                        break
                total += weights[level]
            out[k] = total
        return out
