"""Thresholds chosen from a trained model's own estimate of precision and recall.

Owns: turning the match probabilities a model gives the candidate pairs of a registry into a
link threshold and a review threshold. With probabilities p over the blocked pairs, a model
expects sum(p) true pairs among them; above a threshold t it expects precision
sum(p >= t) / count(p >= t) and recall sum(p >= t) / sum(p). Pure: NumPy in, numbers out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from mpi.linkage.modelfile import Thresholds

# Candidate thresholds, as probabilities. Links below 0.9 are never automatic: a key must be
# confident, whatever the model expects on average.
LINK_GRID = (0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999)
REVIEW_GRID = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
LINK_PRECISION = 0.9995     # expected precision of everything linked automatically
REVIEW_RECALL = 0.999       # share of expected true pairs the review band must reach
DEFAULT = Thresholds(link=0.99, review=0.5)


def expected(p: npt.NDArray[np.float64], t: float) -> dict[str, float]:
    """Expected precision, recall and F1 of linking every pair with probability >= t."""
    total = float(p.sum())
    above = p[p >= t]
    tp = float(above.sum())
    precision = tp / len(above) if len(above) else 1.0
    recall = tp / total if total else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"threshold": t, "pairs": int(len(above)), "precision": round(precision, 6),
            "recall": round(recall, 6), "f1": round(f1, 6)}


def choose_thresholds(probabilities: Any) -> tuple[Thresholds, dict[str, Any]]:
    """The link and review thresholds for a model, and the estimate they rest on.

    Link: the lowest threshold on LINK_GRID whose links the model expects to be at least
    LINK_PRECISION precise. Review: the highest threshold on REVIEW_GRID (below the link one)
    whose band still reaches REVIEW_RECALL of the expected true pairs. With too few pairs to
    estimate anything (< 50 expected true pairs) the defaults stand.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if float(p.sum()) < 50:
        return DEFAULT, {"reason": "too few candidate pairs to estimate; defaults kept",
                         "expected_true_pairs": round(float(p.sum()), 1)}
    link = next((t for t in LINK_GRID if expected(p, t)["precision"] >= LINK_PRECISION),
                LINK_GRID[-1])
    review = REVIEW_GRID[0]
    for t in sorted(REVIEW_GRID, reverse=True):
        if t < link and expected(p, t)["recall"] >= REVIEW_RECALL:
            review = t
            break
    estimate = {"expected_true_pairs": round(float(p.sum()), 1), "candidate_pairs": int(len(p)),
                "at_link": expected(p, link), "at_review": expected(p, review)}
    return Thresholds(link=link, review=review), estimate
