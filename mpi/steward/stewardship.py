"""Use cases of data stewards over persons: merge, split, labels, constraints.

Owns: manual merges and splits (key rules and lineage of mpi/keys.py: the oldest key survives a
merge, the largest part keeps the key on a split, retired keys forward) and ``commit_decision``,
the one write path that stores a decision's labels and constraints (and any regrouping of
records into persons) together with its audit events in one transaction, then updates the
in-memory state.
Split out of registry.py by use case. Must not: run SQL itself (mpi/store) or import splink.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import numpy.typing as npt

from mpi.audit import AuditEntry, key_ref
from mpi.errors import Conflict, InvalidInput, NotFound, Problem
from mpi.identity import regroup as regrouping
from mpi.identity.results import WriteBatch
from mpi.steward.constraints import CANNOT, MUST, Constraint
from mpi.store import constraints as cstore
from mpi.store import labels as lstore
from mpi.store import review as review_store

if TYPE_CHECKING:
    from mpi.identity.registry import Registry

I64 = npt.NDArray[np.int64]
MAX_PAIRS = 10_000  # most labelled pairs one decision or import may create


@dataclass(frozen=True)
class PairDecision:
    """One judged record pair (record_seqs) and whether it also becomes a constraint."""

    a: int
    b: int
    is_match: bool
    reason: str | None = None
    constrain: bool = True


@dataclass
class DecisionResult:
    """What a decision stored and changed."""

    labels: list[int] = field(default_factory=list)
    constraints: list[int] = field(default_factory=list)
    person_keys: list[str] = field(default_factory=list)   # persons after a regroup
    retired: list[str] = field(default_factory=list)
    new_keys: list[str] = field(default_factory=list)
    records_moved: int = 0


# ---- persons in memory ---------------------------------------------------------------
def person_label(reg: Registry, person_key: str, *, field_name: str = "person_key") -> int:
    """The in-memory index of an active person key; NotFound / Conflict (retired) otherwise."""
    person_ix = reg.person_of.get(person_key)
    if person_ix is None:
        raise NotFound("no such person key")
    if reg.person_count[person_ix] <= 0:
        raise Conflict(f"{field_name} is retired or has no active records; use its successor")
    return person_ix


# ---- the one write path --------------------------------------------------------------
def _plan_regroup(reg: Registry, rows: I64, group_of_row: I64, batch: WriteBatch, *,
                  cause: str) -> regrouping.Regroup | None:
    """Key decisions for a new grouping of some records (the re-link's path); None when no
    record would change person."""
    cluster = regrouping.groups_to_clusters(reg.row_seq[rows].astype(np.int64), group_of_row)
    plan = regrouping.plan(reg.state, rows, cluster, batch, cause=cause,
                        model_version=reg.model.version)
    return plan if len(plan.changed) else None


def _cannot_links_joined(reg: Registry, rows: I64, group_of_row: I64) -> list[Constraint]:
    """Active cannot-link constraints a regroup would newly put in one person: both records
    among ``rows`` (whole persons), in one group, in different persons now."""
    if not reg.constraints:
        return []
    where = {int(s): i for i, s in enumerate(reg.row_seq[rows].tolist())}
    label = reg.index.label[rows]
    joined = set()
    for s, i in where.items():
        for other, kind in reg.constraints.partners(s):
            j = where.get(other)
            if kind == CANNOT and j is not None and group_of_row[i] == group_of_row[j] \
                    and label[i] != label[j]:
                joined.add((min(s, other), max(s, other)))
    found = (reg.constraints.between(a, b, CANNOT) for a, b in sorted(joined))
    return sorted((c for c in found if c is not None), key=lambda c: c.constraint_seq)


def blocked_by(constraints: Sequence[Constraint], *, limit: int = 10) -> tuple[str, list[Problem]]:
    """How a 409 names the constraints that block a decision: "#12 (cannot_link), ..." and
    one problem per constraint (field ``constraint_id``). Never a token or person key."""
    shown = list(constraints)[:limit]
    more = f" and {len(constraints) - limit} more" if len(constraints) > limit else ""
    text = ", ".join(f"#{c.constraint_seq} ({c.kind})" for c in shown) + more
    return text, [Problem(None, "constraint_id", f"{c.constraint_seq} ({c.kind}) blocks this")
                  for c in shown]


_SETTLED_BY = {"merge": "settled by a merge", "split": "settled by a split",
               "review": "settled by a review decision"}


def commit_decision(reg: Registry, pairs: Sequence[PairDecision], *, principal: str,
                    source: str, source_ref: str | None, audit: Sequence[AuditEntry],
                    regroup: tuple[I64, I64] | None = None, cause: str = "steward",
                    also: Callable[[duckdb.DuckDBPyConnection], None] | None = None
                    ) -> DecisionResult:
    """Store labels (and constraints) for ``pairs``, optionally regroup records into persons
    (``regroup`` = (rows, group of each row)), run ``also`` and write ``audit``: one
    transaction. Call with ``reg.store.write_lock`` held. Raises Conflict (nothing written)
    when a new constraint contradicts the active ones."""
    if len(pairs) > MAX_PAIRS:
        raise InvalidInput(f"this decision would create {len(pairs)} labelled pairs; the limit "
                           f"is {MAX_PAIRS}")
    new = [(p.a, p.b, MUST if p.is_match else CANNOT) for p in pairs if p.constrain]
    clash = reg.constraints.conflicts(new)
    if clash:
        names, problems = blocked_by(reg.constraints.blocking(new))
        raise Conflict(f"{len(clash)} cannot-link pair(s) would be joined by must-links; "
                       f"blocked by constraint {names or '(this decision)'}; revoke the "
                       "contradicting constraints first (POST /v1/constraints/{id}/revoke)",
                       problems=problems)
    if regroup is not None:
        joined = _cannot_links_joined(reg, regroup[0], regroup[1])
        if joined:
            names, problems = blocked_by(joined)
            raise Conflict(f"this would put {len(joined)} cannot-linked record pair(s) in one "
                           f"person; blocked by constraint {names}; split the persons involved "
                           "first or revoke those constraints (POST /v1/constraints/{id}/revoke)",
                           problems=problems)
    result = DecisionResult()
    batch = WriteBatch(now=reg.clock())
    plan = _plan_regroup(reg, regroup[0], regroup[1], batch, cause=cause) \
        if regroup is not None else None
    added: list[Constraint] = []
    with reg.state.changes(), reg.audited_transaction(audit) as cur:
        result.labels = lstore.insert_labels(
            cur, [{"record_seq_a": p.a, "record_seq_b": p.b, "is_match": p.is_match,
                   "reason": p.reason} for p in pairs],
            principal_id=principal, source=source, now=batch.now)
        kept = [(p, label_seq) for p, label_seq in zip(pairs, result.labels, strict=True) if p.constrain]
        rows = [{"record_seq_a": p.a, "record_seq_b": p.b, "label_seq": label_seq,
                 "kind": MUST if p.is_match else CANNOT, "reason": p.reason} for p, label_seq in kept]
        result.constraints = cstore.insert_constraints(
            cur, rows, principal_id=principal, source=source, source_ref=source_ref,
            now=batch.now)
        added = [Constraint(s, min(p.a, p.b), max(p.a, p.b), MUST if p.is_match else CANNOT)
                 for s, (p, _lab) in zip(result.constraints, kept, strict=True)]
        if plan is not None:
            regrouping.write(cur, plan, batch)
        if also is not None:
            also(cur)
        if plan is not None:  # persons merged or split: close the items that settles
            review_store.resolve_settled_items(cur, now=batch.now,
                                         reason=_SETTLED_BY.get(cause, f"settled by a {cause}"))
            # The in-memory state follows inside the block: undone if the commit fails.
            _apply_regroup(reg, plan, result)
    reg.constraints.add(added)
    if plan is None and regroup is not None:
        result.person_keys = sorted({reg.persons[int(k)]
                                     for k in reg.index.label[regroup[0]].tolist()})
    return result


def _apply_regroup(reg: Registry, plan: regrouping.Regroup, result: DecisionResult) -> None:
    result.records_moved = regrouping.apply(reg.state, plan)
    result.person_keys = sorted({plan.name(int(k)) for k in plan.rec.record_key.tolist()})
    result.retired = sorted(plan.name(k) for k, _s in plan.rec.retired)
    result.new_keys = list(plan.new_keys)


def _summary(result: DecisionResult) -> dict[str, Any]:
    return {"person_keys": result.person_keys, "retired": result.retired,
            "new_keys": result.new_keys, "records_moved": result.records_moved,
            "labels": len(result.labels), "constraint_ids": result.constraints}


# ---- merge and split -------------------------------------------------------------------
def required_reason(reason: str) -> str:
    """The stripped reason; InvalidInput when empty."""
    text = reason.strip()
    if not text:
        raise InvalidInput("a reason is required", problems=[Problem(None, "reason", "empty")])
    return text


def merge_persons(reg: Registry, person_key: str, *, others: Sequence[str], reason: str,
                  principal: str) -> dict[str, Any]:
    """Merge persons into one (the oldest key survives; the others retire and forward to it).

    Every record of the merged persons becomes must-linked to the oldest record (labels and
    constraints with source ``merge``), so later re-links keep them together.
    """
    target = key_ref(person_key)
    with reg.refusals_audited(principal, "persons.merge", target), reg.store.write_lock:
        text = required_reason(reason)
        person_ixs = [person_label(reg, person_key)]
        problems = []
        for i, key in enumerate(others):
            person_ix = reg.person_of.get(key)
            if person_ix is None or reg.person_count[person_ix] <= 0:
                problems.append(Problem(None, f"person_keys[{i}]", "no such active person key"))
            elif person_ix in person_ixs:
                problems.append(Problem(None, f"person_keys[{i}]", "named twice (or the path key)"))
            else:
                person_ixs.append(person_ix)
        if problems or len(person_ixs) < 2:
            raise InvalidInput("cannot merge these persons", problems=problems or [
                Problem(None, "person_keys", "name at least one other active person key")])
        rows = reg.state.rows_of_persons(person_ixs)
        seqs = reg.row_seq[rows].tolist()
        anchor = min(seqs)
        pairs = [PairDecision(anchor, s, True, text) for s in seqs if s != anchor]
        audit = [AuditEntry(principal, "persons.merge", target, detail={
            "persons": len(person_ixs), "records": len(seqs), "reason": text})]
        res = commit_decision(reg, pairs, principal=principal, source="merge", source_ref=None,
                              audit=audit, regroup=(rows, np.zeros(len(rows), dtype=np.int64)),
                              cause="merge")
    return {"person_key": res.person_keys[0] if res.person_keys else person_key,
            **_summary(res)}


def split_person(reg: Registry, person_key: str, *, groups: Sequence[Sequence[tuple[str, str]]],
                 reason: str, principal: str) -> dict[str, Any]:
    """Split a person's active records into the given groups (every record in exactly one).

    The group with most records keeps the key (tie: the one with the oldest record); the others
    get new keys with split lineage. Every pair across groups becomes cannot-linked.
    """
    target = key_ref(person_key)
    with reg.refusals_audited(principal, "persons.split", target), reg.store.write_lock:
        text = required_reason(reason)
        person_ix = person_label(reg, person_key)
        rows = reg.state.rows_of_persons([person_ix])
        seq_row = {int(reg.row_seq[r]): int(r) for r in rows.tolist()}
        refs = [ref for g in groups for ref in g]
        found = review_store.records_by_source_id(reg.store.cursor(), refs)
        group_of: dict[int, int] = {}
        problems = []
        if len(groups) < 2 or any(not g for g in groups):
            problems.append(Problem(None, "groups", "give at least two non-empty groups"))
        for gi, g in enumerate(groups):
            for ri, ref in enumerate(g):
                rec = found.get(ref)
                seq = int(rec["record_seq"]) if rec is not None else -1
                where = f"groups[{gi}][{ri}]"
                if seq not in seq_row:
                    problems.append(Problem(None, where, "not an active record of this person"))
                elif seq in group_of:
                    problems.append(Problem(None, where, "record listed twice"))
                else:
                    group_of[seq] = gi
        missing = len(seq_row) - len(group_of)
        if missing > 0 and not problems:
            problems.append(Problem(None, "groups", f"{missing} active record(s) of this person "
                                    "are in no group; every record must be placed"))
        if problems:
            raise InvalidInput("cannot split this person as asked", problems=problems)
        ordered = sorted(seq_row)
        pairs = [PairDecision(a, b, False, text) for i, a in enumerate(ordered)
                 for b in ordered[i + 1:] if group_of[a] != group_of[b]]
        row_arr = np.array([seq_row[s] for s in ordered], dtype=np.int64)
        grp = np.array([group_of[s] for s in ordered], dtype=np.int64)
        audit = [AuditEntry(principal, "persons.split", target, detail={
            "groups": len(groups), "records": len(ordered), "reason": text})]
        res = commit_decision(reg, pairs, principal=principal, source="split", source_ref=None,
                              audit=audit, regroup=(row_arr, grp), cause="split")
    return {"person_key": person_key, **_summary(res)}
