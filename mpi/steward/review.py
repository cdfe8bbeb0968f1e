"""Use cases of the review queue: list and explain items, and record stewards' decisions.

Owns: how an item is shown (its two sides' current records, the agencies involved, its
current score under the active model, the best-scoring record pair across the sides explained
comparison by comparison, the frequency band of each name token and every record pair across
the sides as an agreement pattern, never a token), scoring items on their current sides
(``item_scores``, for the rescore), what a decision does: ``match`` merges the sides'
persons now and must-links them, ``non_match`` cannot-links every record pair across the
sides, ``defer`` parks the item; and ``reopen`` (the item only: labels, constraints and
merges it caused stay; Decision 88). Match and non-match decisions become labels. Split out
of registry.py by use case. Must not: run SQL itself (mpi/store) or import splink.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mpi.audit import AuditEntry
from mpi.errors import Conflict, InvalidInput, NotFound, Problem
from mpi.linkage.explain import ELSE_LABEL, NULL_LABEL, explain_with
from mpi.linkage.params import probability
from mpi.steward.namefreq import name_bands
from mpi.steward.stewardship import (
    PairDecision,
    commit_decision,
    required_reason,
)
from mpi.store import persons as pstore
from mpi.store import review as review_store

if TYPE_CHECKING:
    from mpi.identity.registry import Registry

KINDS = ("record_person", "possible_duplicate")
STATUSES = ("open", "deferred", "decided", "resolved")
DECISIONS = ("match", "non_match", "defer")
SORTS = review_store.SORTS
MAX_PAIRS = 200  # record pairs shown per item (the count says how many there are)


@dataclass
class _Sides:
    """The current active records (index rows, by record_seq) on each side of an item."""

    a: dict[int, int]
    b: dict[int, int]


def _labels_of_key(reg: Registry, person_key: str | None) -> list[int]:
    """Persons now holding a key's records: itself if active, else its active successors."""
    if person_key is None:
        return []
    person_ix = reg.person_of.get(person_key)
    if person_ix is not None and reg.person_count[person_ix] > 0:
        return [person_ix]
    keys = pstore.active_successors(reg.store.cursor(), person_key)
    return [reg.person_of[k] for k in keys if k in reg.person_of]


class _Lookup:
    """Index rows of the records a page of items involves, found in one pass over the index,
    and their agency and source ids, read in one query (not one pass or query per item)."""

    def __init__(self, reg: Registry, items: Sequence[dict[str, Any]]) -> None:
        self.labels_of = {k: _labels_of_key(reg, k) for it in items
                          for k in (it["person_key"], it["other_person_key"]) if k is not None}
        labels = sorted({person_ix for person_ixs in self.labels_of.values() for person_ix in person_ixs})
        self.by_label: dict[int, dict[int, int]] = {}
        if labels:
            for r in reg.state.rows_of_persons(labels).tolist():
                self.by_label.setdefault(int(reg.index.label[r]), {})[int(reg.row_seq[r])] = r
        seqs = [int(it["record_seq"]) for it in items
                if it["kind"] == "record_person" and it["record_seq"] is not None]
        self.record_row = reg.state.rows_of_records(seqs) if seqs else {}
        shown = [*self.record_row, *(s for rows in self.by_label.values() for s in rows)]
        self.info = review_store.records_by_seq(reg.store.cursor(), shown)

    def person(self, key: str | None) -> dict[int, int]:
        """record_seq -> row of the records now held under a key (or its successors)."""
        out: dict[int, int] = {}
        for person_ix in self.labels_of.get(key, []) if key is not None else []:
            out.update(self.by_label.get(person_ix, {}))
        return out

    def record(self, seq: int | None) -> dict[int, int]:
        """{record_seq: row} for an active record, else empty."""
        return {seq: self.record_row[seq]} if seq is not None and seq in self.record_row else {}


def _sides(reg: Registry, item: dict[str, Any], look: _Lookup) -> _Sides:
    if item["kind"] == "record_person":
        a = look.record(int(item["record_seq"]) if item["record_seq"] is not None else None)
        b = look.person(item["person_key"])
    else:
        a = look.person(item["person_key"])
        b = look.person(item["other_person_key"])
    for s in set(a) & set(b):  # a record is on one side only (the side it was reviewed on)
        del b[s]
    return _Sides(a, b)


def _cross(reg: Registry, sides: _Sides
           ) -> tuple[list[int], list[int], dict[str, Any], dict[str, Any]]:
    """Every (a, b) record pair across the sides, a-major: the sides' record_seqs and the
    gathered left and right token rows (pair k is ``sa[k // len(sb)]``, ``sb[k % len(sb)]``)."""
    sa, sb = list(sides.a), list(sides.b)
    la = np.repeat(np.array([sides.a[s] for s in sa], dtype=np.int64), len(sb))
    rb = np.tile(np.array([sides.b[s] for s in sb], dtype=np.int64), len(sa))
    return sa, sb, reg.index.gather(la), reg.index.gather(rb)


def _scored_best(reg: Registry, sides: _Sides) -> tuple[int, int, float] | None:
    """The highest-scoring (a, b) record pair across the sides (record_seqs) and its weight."""
    if not sides.a or not sides.b:
        return None
    sa, sb, left, right = _cross(reg, sides)
    weights = reg.scorer.weights(left, right)
    i = int(np.argmax(weights))
    return sa[i // len(sb)], sb[i % len(sb)], float(weights[i])


def _best_pair(reg: Registry, sides: _Sides) -> tuple[int, int] | None:
    """The highest-scoring (a, b) record pair across the sides (record_seqs)."""
    best = _scored_best(reg, sides)
    return None if best is None else (best[0], best[1])


def item_scores(reg: Registry, items: Sequence[dict[str, Any]]
                ) -> list[tuple[float, float] | None]:
    """Each item's best match weight and probability across its current sides with the active
    model (None when a side has no active record). The caller holds the write lock."""
    look = _Lookup(reg, items)
    out: list[tuple[float, float] | None] = []
    for item in items:
        best = _scored_best(reg, _sides(reg, item, look))
        out.append(None if best is None else (best[2], probability(best[2])))
    return out


def best_records(reg: Registry, item: dict[str, Any]) -> tuple[int, int] | None:
    """The record_seqs of the best-scoring record pair across an item's current sides (None
    when a side has no active record). The caller holds the write lock."""
    return _best_pair(reg, _sides(reg, item, _Lookup(reg, [item])))


def _all_pairs(reg: Registry, sides: _Sides, ref: Any) -> dict[str, Any]:
    """Every record pair across the sides (up to MAX_PAIRS, best first) as agreement patterns."""
    if not sides.a or not sides.b:
        return {"total": 0, "pairs": []}
    sa, sb, left, right = _cross(reg, sides)
    weights = reg.scorer.weights(left, right)
    levels = reg.scorer.levels(left, right)
    comps = reg.scorer.definition.comparisons
    order = np.argsort(-weights, kind="stable")[:MAX_PAIRS]
    pairs = []
    for k in order.tolist():
        pattern = {}
        for comp, lv in zip(comps, levels, strict=True):
            i = int(lv[k])
            pattern[comp.name] = (NULL_LABEL if i < 0 else ELSE_LABEL if i == len(comp.levels)
                                  else comp.levels[i].label)
        a, b = sa[k // len(sb)], sb[k % len(sb)]
        pairs.append({"left": ref(a, sides.a), "right": ref(b, sides.b),
                      "match_weight": float(weights[k]),
                      "match_probability": probability(float(weights[k])),
                      "agreement": pattern})
    return {"total": len(weights), "pairs": pairs}


def _token_row(reg: Registry, row: int) -> dict[str, int]:
    return {c: int(reg.index.data[c][row]) for c in reg.index.columns}


def _show(reg: Registry, item: dict[str, Any], lookup: _Lookup | None = None, *,
          full: bool = False, explained: bool = True) -> dict[str, Any]:
    """An item as stewards see it: sides, agencies, current score, the explained best pair
    (with ``full``, the item page: name-frequency bands and every record pair); no token."""
    look = lookup or _Lookup(reg, [item])
    sides = _sides(reg, item, look)
    best = _best_pair(reg, sides) if explained or full else None
    info = look.info

    def ref(seq: int, rows: dict[int, int]) -> dict[str, Any]:
        r = info.get(seq, {})
        return {"agency": r.get("agency"), "source_record_id": r.get("source_record_id"),
                "person_key": reg.persons[int(reg.index.label[rows[seq]])]}

    explanation = None
    if best is not None:
        ex = explain_with(_token_row(reg, sides.a[best[0]]), _token_row(reg, sides.b[best[1]]),
                          scorer=reg.scorer)
        explanation = {"model_version": reg.model.version, "left": ref(best[0], sides.a),
                       "right": ref(best[1], sides.b), **ex.as_dict(),
                       "agreement": {c.comparison: c.label for c in ex.comparisons}}
        if full:  # the item page only: the list stays cheap
            bands = name_bands(reg, [sides.a[best[0]], sides.b[best[1]]])
            explanation["name_frequency"] = {"left": bands[0], "right": bands[1]}
    agencies = sorted({str(info[s]["agency"]) for s in [*sides.a, *sides.b] if s in info})
    current_p = item.get("current_probability")
    current_w = item.get("current_weight")
    out = {"item_id": item["item_seq"], "kind": item["kind"], "status": item["status"],
            "match_probability": item["match_probability"], "match_weight": item["match_weight"],
            "model_version": item["model_version"], "created_at": item["created_at"],
            "current_probability": item["match_probability"] if current_p is None else current_p,
            "current_weight": item["match_weight"] if current_w is None else current_w,
            "scored_model_version": item.get("scored_model_version") or item["model_version"],
            "person_key": item["person_key"], "other_person_key": item["other_person_key"],
            "record": ref(next(iter(sides.a)), sides.a)
            if item["kind"] == "record_person" and sides.a else None,
            "records": {"a": len(sides.a), "b": len(sides.b)}, "agencies": agencies,
            "explanation": explanation, "decision": item["decision"],
            "decision_reason": item["decision_reason"], "decided_by": item["decided_by"],
            "decided_at": item["decided_at"]}
    if full:
        out["pairs"] = _all_pairs(reg, sides, ref)
    return out


def list_review(reg: Registry, *, principal: str, kind: str | None = None,
                status: str = "open", agency: str | None = None,
                min_probability: float | None = None, max_probability: float | None = None,
                after: int = 0, limit: int = 50, sort: str = "id",
                explained: bool = True) -> dict[str, Any]:
    """A page of review items matching the filters on current scores, each explained (unless
    not ``explained``: a list page that shows no explanation skips scoring the best pair), by
    id or by current probability (``after`` then counts items to skip) (audited read)."""
    problems = []
    if sort not in SORTS:
        problems.append(Problem(None, "sort", f"one of {', '.join(SORTS)}"))
    if kind is not None and kind not in KINDS:
        problems.append(Problem(None, "kind", f"one of {', '.join(KINDS)}"))
    if status not in (*STATUSES, "all"):
        problems.append(Problem(None, "status", f"one of {', '.join(STATUSES)} or all"))
    if min_probability is not None and max_probability is not None \
            and min_probability > max_probability:
        problems.append(Problem(None, "min_probability", "greater than max_probability"))
    if limit < 1:
        problems.append(Problem(None, "limit", "at least 1"))
    if problems:
        with reg.refusals_audited(principal, "review.list", "review"):
            raise InvalidInput("invalid review filter", problems=problems)
    statuses = STATUSES if status == "all" else (status,)
    with reg.store.write_lock:
        rows = review_store.list_review_items(
            reg.store.cursor(), kind=kind, statuses=statuses, agency=agency,
            min_probability=min_probability, max_probability=max_probability, after=after,
            limit=limit, sort=sort)
        lookup = _Lookup(reg, rows)
        items = [_show(reg, r, lookup, explained=explained) for r in rows]
    reg.record_audit([AuditEntry(principal, "review.list", "review",
                                 detail={"items": len(items)})])
    if len(items) < limit:
        return {"items": items, "next_after": None}
    return {"items": items,
            "next_after": items[-1]["item_id"] if sort == "id" else after + len(items)}


def _item(reg: Registry, item_id: int) -> dict[str, Any]:
    item = review_store.find_review_item(reg.store.cursor(), item_id)
    if item is None:
        raise NotFound("no such review item")
    return item


def get_review_item(reg: Registry, item_id: int, *, principal: str) -> dict[str, Any]:
    """One review item, explained (audited read)."""
    target = f"review:{item_id}"
    with reg.refusals_audited(principal, "review.read", target), reg.store.write_lock:
        out = _show(reg, _item(reg, item_id), full=True)
    reg.record_audit([AuditEntry(principal, "review.read", target)])
    return out


def reopen_review(reg: Registry, item_id: int, *, reason: str, principal: str) -> dict[str, Any]:
    """Open a decided, deferred or resolved item again (audited with what it had). Only the
    item reopens: labels, constraints and merges its decision made stay until revoked or split
    (Decision 88)."""
    target = f"review:{item_id}"
    with reg.refusals_audited(principal, "review.reopen", target), reg.store.write_lock:
        text = required_reason(reason)
        item = _item(reg, item_id)
        if item["status"] == "open":
            raise Conflict("this review item is already open")
        entry = AuditEntry(principal, "review.reopen", target, detail={
            "reason": text, "was": item["status"], "decision": item["decision"],
            "decided_by": item["decided_by"]})
        with reg.audited_transaction([entry]) as cur:
            review_store.reopen_review_item(cur, item_id)
        return _show(reg, _item(reg, item_id))


def decide_review(reg: Registry, item_id: int, *, decision: str, reason: str,
                  principal: str) -> dict[str, Any]:
    """Record a decision on an item: labels, constraints and (for a match) the merge, in one
    transaction with the audit event."""
    target = f"review:{item_id}"
    with reg.refusals_audited(principal, "review.decide", target), reg.store.write_lock:
        if decision not in DECISIONS:
            raise InvalidInput("invalid decision", problems=[
                Problem(None, "decision", f"one of {', '.join(DECISIONS)}")])
        text = required_reason(reason)
        item = _item(reg, item_id)
        if item["status"] == "decided":
            raise Conflict("this review item is already decided")
        status = "deferred" if decision == "defer" else "decided"
        audit = [AuditEntry(principal, "review.decide", target,
                            detail={"decision": decision, "kind": item["kind"], "reason": text})]

        def mark(cur: Any) -> None:
            review_store.decide_review_item(cur, item_id, status=status, decision=decision, reason=text,
                                      principal_id=principal, now=reg.clock())

        pairs: list[PairDecision] = []
        regroup = None
        if decision != "defer":
            sides = _sides(reg, item, _Lookup(reg, [item]))
            if _merged_since(reg, item, sides):
                if decision == "non_match":
                    raise Conflict("the two sides are one person now; split that person first "
                                   "(POST /v1/persons/{person_key}/split)")
            elif not sides.a or not sides.b:
                raise Conflict("one side of this item has no active records any more")
            else:
                pairs, regroup = _decision_pairs(reg, sides, is_match=decision == "match",
                                                 reason=text)
        res = commit_decision(reg, pairs, principal=principal, source="review",
                              source_ref=target, audit=audit, regroup=regroup, cause="review",
                              also=mark)
        out = _show(reg, _item(reg, item_id))
    return {**out, "labels": len(res.labels), "constraint_ids": res.constraints,
            "retired": res.retired, "records_moved": res.records_moved}


def _merged_since(reg: Registry, item: dict[str, Any], sides: _Sides) -> bool:
    """True when a possible duplicate's two keys now lead to the same person(s) (e.g. after a
    re-link merged them): a match then only closes the item; there is no pair left to label."""
    if item["kind"] != "possible_duplicate" or not sides.a or sides.b:
        return False
    return set(_labels_of_key(reg, item["person_key"])) == \
        set(_labels_of_key(reg, item["other_person_key"]))


def _decision_pairs(reg: Registry, sides: _Sides, *, is_match: bool,
                    reason: str) -> tuple[list[PairDecision], tuple[Any, Any] | None]:
    labs_a = {int(reg.index.label[r]) for r in sides.a.values()}
    labs_b = {int(reg.index.label[r]) for r in sides.b.values()}
    if not is_match:
        if labs_a & labs_b:
            raise Conflict("the two sides are one person now; split that person first "
                           "(POST /v1/persons/{person_key}/split)")
        return [PairDecision(a, b, False, reason) for a in sides.a for b in sides.b], None
    best = _best_pair(reg, sides)
    assert best is not None
    ba, bb = best
    pairs = [PairDecision(ba, b, True, reason) for b in sides.b]
    pairs += [PairDecision(a, bb, True, reason) for a in sides.a if a != ba]
    rows = reg.state.rows_of_persons(sorted(labs_a | labs_b))
    return pairs, (rows, np.zeros(len(rows), dtype=np.int64))
