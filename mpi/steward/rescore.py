"""Keeping the review queue fresh: rescoring open items with the active model after a promote
or a re-link, and closing those that no longer reach its review threshold.

Owns: ``rescore_queue``: every open or deferred item is scored again on its current sides
(``review.item_scores``, the best record pair across them) with the active model; the score is
stored as the item's current score (the score it was queued at stays), and an item whose
current probability is below the active review threshold is resolved with the cause
``below_threshold_after_rescore``. One transaction with one ``review.rescore`` audit event
(Decision 86). Must not: run SQL itself (mpi/store), change who is who, or import splink.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mpi.audit import AuditEntry
from mpi.steward import review
from mpi.store import review as review_store

if TYPE_CHECKING:
    from mpi.identity.registry import Registry

BELOW_THRESHOLD = "below_threshold_after_rescore"


def rescore_queue(reg: Registry, *, principal: str, cause: str) -> dict[str, Any]:
    """Rescore open and deferred items with the active model; resolve those below its review
    threshold. Returns the counts (also in the audit event)."""
    with reg.store.write_lock:
        items = review_store.open_items(reg.store.cursor())
        scores = review.item_scores(reg, items)
        threshold = reg.model.thresholds.review
        scored: list[tuple[int, float, float]] = []
        below: list[int] = []
        for item, score in zip(items, scores, strict=True):
            if score is None:  # a side has no active record: the next settle closes it
                continue
            weight, prob = score
            scored.append((int(item["item_seq"]), weight, prob))
            if prob < threshold:
                below.append(int(item["item_seq"]))
        figures = {"cause": cause, "model_version": reg.model.version, "items": len(items),
                   "rescored": len(scored), "resolved": len(below),
                   "review_threshold": threshold}
        entry = AuditEntry(principal, "review.rescore", "review", detail=figures)
        now = reg.clock()
        with reg.audited_transaction([entry]) as cur:
            review_store.set_current_scores(cur, scored, model_version=reg.model.version, now=now)
            review_store.resolve_items(cur, below, reason=BELOW_THRESHOLD, now=now)
    return figures
