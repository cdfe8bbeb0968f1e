"""Asking the agencies to verify a pair: verification tasks linked to a review item.

Owns: who may see and answer a task and what each side sees (Decision 88). A steward asks
about an open or deferred item: the best record pair across its current sides becomes one
task per agency holding a record of the pair (one task naming both records when one agency
holds both). An agency's principals list only their agency's tasks, each with only their own
source record id(s): never the other agency's record id, the other agency's name, a person key
or a score; they answer ``same``, ``different`` or ``unsure`` with an optional note. The
steward sees the answers on the item. Every request, list, answer and refusal is audited.
Must not: run SQL itself (mpi/store), change who is who, or decide the item (an answer is
evidence for the steward, not a decision).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mpi.audit import AuditEntry
from mpi.errors import Conflict, InvalidInput, NotFound, Problem
from mpi.steward import review
from mpi.store import review as review_store
from mpi.store import verifications as vstore

if TYPE_CHECKING:
    from mpi.identity.registry import Registry

ANSWERS = ("same", "different", "unsure")
STATUSES = ("open", "answered")
DEFAULT_QUESTION = "Do these records describe the same person?"
MAX_TEXT = 500


def _text(value: str | None, field: str, default: str | None) -> str | None:
    if value is None or not value.strip():
        return default
    if len(value) > MAX_TEXT:
        raise InvalidInput(f"{field} is too long", problems=[
            Problem(None, field, f"at most {MAX_TEXT} characters")])
    return value.strip()


def request_verification(reg: Registry, item_id: int, *, principal: str,
                         question: str | None = None) -> dict[str, Any]:
    """Create the verification tasks of an open or deferred item (409 while some are open)."""
    target = f"review:{item_id}"
    with reg.refusals_audited(principal, "verification.request", target), reg.store.write_lock:
        text = _text(question, "question", DEFAULT_QUESTION)
        item = review_store.find_review_item(reg.store.cursor(), item_id)
        if item is None:
            raise NotFound("no such review item")
        if item["status"] not in ("open", "deferred"):
            raise Conflict("only an open or deferred review item can be sent for verification")
        existing = vstore.tasks_of_item(reg.store.cursor(), item_id)
        if any(t["status"] == "open" for t in existing):
            raise Conflict("this review item already has open verification tasks")
        best = review.best_records(reg, item)
        if best is None:
            raise Conflict("one side of this item has no active records any more")
        info = review_store.records_by_seq(reg.store.cursor(), list(best))
        a, b = best
        agency_a, agency_b = str(info[a]["agency"]), str(info[b]["agency"])
        now = reg.clock()
        base = {"item_seq": item_id, "question": text, "created_by": principal,
                "created_at": now}
        if agency_a == agency_b:
            tasks = [{**base, "agency": agency_a, "record_seq": a, "other_record_seq": b}]
        else:
            tasks = [{**base, "agency": agency_a, "record_seq": a},
                     {**base, "agency": agency_b, "record_seq": b}]
        entry = AuditEntry(principal, "verification.request", target,
                           detail={"tasks": len(tasks),
                                   "agencies": sorted({t["agency"] for t in tasks})})
        with reg.audited_transaction([entry]) as cur:
            ids = vstore.insert_tasks(cur, tasks)
        shown = item_tasks(reg, item_id)
    return {"item_id": item_id, "tasks": [t for t in shown if t["task_id"] in ids]}


def item_tasks(reg: Registry, item_id: int) -> list[dict[str, Any]]:
    """An item's tasks as the steward sees them (agency, status, answer; no record ids)."""
    return [{"task_id": t["task_seq"], "agency": t["agency"], "status": t["status"],
             "question": t["question"], "answer": t["answer"], "answer_note": t["answer_note"],
             "created_at": t["created_at"], "answered_at": t["answered_at"]}
            for t in vstore.tasks_of_item(reg.store.cursor(), item_id)]


def _agency_view(t: dict[str, Any]) -> dict[str, Any]:
    own = [t["source_record_id"]]
    if t.get("other_source_record_id") is not None:
        own.append(t["other_source_record_id"])
    return {"task_id": t["task_seq"], "question": t["question"], "status": t["status"],
            "source_record_ids": own, "answer": t["answer"], "answer_note": t["answer_note"],
            "created_at": t["created_at"], "answered_at": t["answered_at"]}


def list_tasks(reg: Registry, *, agency: str, principal: str, status: str | None = None,
               after: int = 0, limit: int = 50) -> dict[str, Any]:
    """A page of one agency's tasks, each with only its own source record ids (audited)."""
    with reg.refusals_audited(principal, "verification.list", f"agency:{agency}"):
        if status is not None and status not in STATUSES:
            raise InvalidInput("invalid status", problems=[
                Problem(None, "status", f"one of {', '.join(STATUSES)}")])
        if limit < 1:
            raise InvalidInput("invalid limit", problems=[Problem(None, "limit", "at least 1")])
    with reg.store.write_lock:
        rows = vstore.tasks_of_agency(reg.store.cursor(), agency, status=status, after=after,
                                      limit=limit)
    tasks = [_agency_view(t) for t in rows]
    reg.record_audit([AuditEntry(principal, "verification.list", f"agency:{agency}",
                                 detail={"tasks": len(tasks)})])
    return {"tasks": tasks, "next_after": tasks[-1]["task_id"] if len(tasks) == limit else None}


def answer(reg: Registry, task_id: int, *, agency: str, principal: str, value: str,
           note: str | None = None) -> dict[str, Any]:
    """Record an agency's answer on one of its tasks (404 for another agency's task)."""
    target = f"verification:{task_id}"
    with reg.refusals_audited(principal, "verification.answer", target), reg.store.write_lock:
        if value not in ANSWERS:
            raise InvalidInput("invalid answer", problems=[
                Problem(None, "answer", f"one of {', '.join(ANSWERS)}")])
        text = _text(note, "note", None)
        task = vstore.find_task(reg.store.cursor(), task_id)
        if task is None or task["agency"] != agency:
            raise NotFound("no such verification task")
        if task["status"] != "open":
            raise Conflict("this verification task is already answered")
        entry = AuditEntry(principal, "verification.answer", target,
                           detail={"answer": value, "item": f"review:{task['item_seq']}"})
        with reg.audited_transaction([entry]) as cur:
            vstore.answer_task(cur, task_id, answer=value, note=text, principal_id=principal,
                               now=reg.clock())
        rows = vstore.tasks_of_agency(reg.store.cursor(), agency, status=None,
                                      after=task_id - 1, limit=1)
    return _agency_view(rows[0])
