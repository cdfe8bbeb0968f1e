"""Use cases of labels and constraints: bulk label import, listing and revoking constraints.

Owns: importing labelled record pairs named by (agency, source_record_id) (all or none, bad rows
named by row and field; an agency only for pairs of its own records), and the steward's view
and revocation of must-link / cannot-link constraints. Writes go through
``stewardship.commit_decision`` (labels, constraints and the audit event in one transaction).
Must not: run SQL itself (mpi/store) or import splink.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mpi.audit import AuditEntry, key_ref
from mpi.errors import Conflict, InvalidInput, NotFound, Problem
from mpi.steward.constraints import CANNOT, MUST
from mpi.steward.stewardship import (
    MAX_PAIRS,
    PairDecision,
    commit_decision,
    required_reason,
)
from mpi.store import constraints as cstore
from mpi.store import labels as lstore
from mpi.store import review as review_store

if TYPE_CHECKING:
    from mpi.identity.registry import Registry


@dataclass(frozen=True)
class LabelRow:
    """One imported labelled pair, by (agency, source_record_id)."""

    agency_a: str
    source_record_id_a: str
    agency_b: str
    source_record_id_b: str
    is_match: bool
    reason: str | None = None


def import_labels(reg: Registry, rows: Sequence[LabelRow], *, principal: str,
                  agency: str | None = None, constrain: bool = True) -> dict[str, Any]:
    """Store labelled pairs (all or none); each also becomes a constraint unless
    ``constrain`` is false. With ``agency`` (an agency caller) both records must be its own.
    Bad rows raise InvalidInput naming each row (1-based) and field. Constraints from an
    import take effect at the next re-link; ``unmet`` counts those the current keys break."""
    target = f"agency:{agency}/labels" if agency else "labels"
    with reg.refusals_audited(principal, "labels.import", target), reg.store.write_lock:
        if not rows:
            raise InvalidInput("no labels", problems=[Problem(None, "labels", "empty")])
        if len(rows) > MAX_PAIRS:
            raise InvalidInput(f"at most {MAX_PAIRS} labels per import")
        refs = [(r.agency_a, r.source_record_id_a) for r in rows] + \
            [(r.agency_b, r.source_record_id_b) for r in rows]
        found = review_store.records_by_source_id(reg.store.cursor(), refs)
        pairs, problems = [], []
        for i, r in enumerate(rows, start=1):
            seqs = []
            for side, ag, sid in (("a", r.agency_a, r.source_record_id_a),
                                  ("b", r.agency_b, r.source_record_id_b)):
                if agency is not None and ag != agency:
                    problems.append(Problem(i, f"agency_{side}", "an agency may label only "
                                            "pairs of its own records"))
                elif (ag, sid) not in found:
                    problems.append(Problem(i, f"source_record_id_{side}",
                                            "no record with this id at this agency"))
                else:
                    seqs.append(int(found[(ag, sid)]["record_seq"]))
            if len(seqs) == 2 and seqs[0] == seqs[1]:
                problems.append(Problem(i, "source_record_id_b", "the same record as side a"))
            elif len(seqs) == 2:
                pairs.append((i, PairDecision(seqs[0], seqs[1], r.is_match, r.reason, constrain)))
        if not problems and constrain:
            problems = _contradictions(reg, pairs)
        if problems:
            raise InvalidInput(f"{len({p.row for p in problems})} of {len(rows)} labels are "
                               "invalid; none was stored", problems=problems)
        audit = [AuditEntry(principal, "labels.import", target,
                            detail={"labels": len(pairs), "constrain": constrain})]
        res = commit_decision(reg, [p for _i, p in pairs], principal=principal, source="import",
                              source_ref=None, audit=audit)
        unmet = _unmet(reg, [p for _i, p in pairs]) if constrain else 0
    return {"labels": len(res.labels), "label_ids": res.labels, "constraint_ids": res.constraints,
            "unmet": unmet}


def _contradictions(reg: Registry, pairs: Sequence[tuple[int, PairDecision]]) -> list[Problem]:
    new = [(p.a, p.b, MUST if p.is_match else CANNOT) for _i, p in pairs]
    clash = set(reg.constraints.conflicts(new))
    if not clash:
        return []
    out = []
    for i, p in pairs:
        key = (min(p.a, p.b), max(p.a, p.b))
        if key in clash and not p.is_match:
            out.append(Problem(i, "is_match", "contradicts must-links (in this import or "
                               "active constraints); revoke or correct them first"))
    return out or [Problem(None, "labels", "these labels contradict active cannot-link "
                           "constraints; revoke them first")]


def _unmet(reg: Registry, pairs: Sequence[PairDecision]) -> int:
    where = reg.state.rows_of_records([s for p in pairs for s in (p.a, p.b)])
    n = 0
    for p in pairs:
        if p.a in where and p.b in where:
            same = reg.index.label[where[p.a]] == reg.index.label[where[p.b]]
            n += int(bool(same) != p.is_match)
    return n


# ---- constraints -----------------------------------------------------------------------
def _constraint_out(row: dict[str, Any]) -> dict[str, Any]:
    return {"constraint_id": row["constraint_seq"], "kind": row["kind"], "source": row["source"],
            "source_ref": row["source_ref"], "label_id": row["label_seq"],
            "records": [{"agency": row["agency_a"], "source_record_id": row["source_record_id_a"]},
                        {"agency": row["agency_b"], "source_record_id": row["source_record_id_b"]}],
            "reason": row["reason"], "created_by": row["principal_id"],
            "created_at": row["created_at"], "revoked_at": row["revoked_at"],
            "revoked_by": row["revoked_by"], "revoke_reason": row["revoke_reason"]}


def list_constraints(reg: Registry, *, principal: str, status: str = "active",
                     kind: str | None = None, after: int = 0, limit: int = 100,
                     person_key: str | None = None, agency: str | None = None,
                     source_record_id: str | None = None) -> dict[str, Any]:
    """A page of constraints (audited read), optionally only those touching a record of the
    person ``person_key`` (its current records), of ``agency``, or the record (``agency``,
    ``source_record_id``)."""
    with reg.refusals_audited(principal, "constraints.list", "constraints"):
        if source_record_id is not None and agency is None:
            raise InvalidInput("bad filter", problems=[
                Problem(None, "source_record_id", "give agency with source_record_id")])
        if status not in ("active", "revoked", "all"):
            raise InvalidInput("bad status", problems=[
                Problem(None, "status", "active, revoked or all")])
        if kind is not None and kind not in (MUST, CANNOT):
            raise InvalidInput("bad kind", problems=[
                Problem(None, "kind", "must_link or cannot_link")])
        if limit < 1:
            raise InvalidInput("bad limit", problems=[Problem(None, "limit", "at least 1")])
    rows = cstore.list_constraints(reg.store.cursor(), status=status, kind=kind, after=after,
                                   limit=limit, person_key=person_key, agency=agency,
                                   source_record_id=source_record_id)
    detail: dict[str, Any] = {"rows": len(rows)}
    if person_key is not None:
        detail["person"] = key_ref(person_key)
    if agency is not None:
        detail["agency"] = agency
    reg.record_audit([AuditEntry(principal, "constraints.list", "constraints", detail=detail)])
    items = [_constraint_out(r) for r in rows]
    return {"constraints": items,
            "next_after": items[-1]["constraint_id"] if len(items) == limit else None}


def revoke_constraint(reg: Registry, constraint_id: int, *, reason: str,
                      principal: str) -> dict[str, Any]:
    """Revoke a constraint and its label; keys change only at the next re-link."""
    target = f"constraint:{constraint_id}"
    with reg.refusals_audited(principal, "constraints.revoke", target), reg.store.write_lock:
        text = required_reason(reason)
        row = cstore.find_constraint(reg.store.cursor(), constraint_id)
        if row is None:
            raise NotFound("no such constraint")
        if row["revoked_at"] is not None:
            raise Conflict("this constraint is already revoked")
        audit = [AuditEntry(principal, "constraints.revoke", target, detail={"reason": text})]
        with reg.audited_transaction(audit) as cur:
            now = reg.clock()
            cstore.revoke_constraint(cur, constraint_id, principal_id=principal, reason=text,
                                     now=now)
            if row["label_seq"] is not None:
                lstore.revoke_label(cur, int(row["label_seq"]), now=now)
        reg.constraints.remove(constraint_id)
        row = cstore.find_constraint(reg.store.cursor(), constraint_id)
        assert row is not None
    return _constraint_out(row)
