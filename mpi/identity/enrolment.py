"""Use case: enrol token records (online match-or-create), with group commit.

Owns: turning validated records into record versions, key decisions, review items and events;
committing concurrent callers' work in one transaction; undoing in-memory changes when a commit
fails. Split out of registry.py by use case. Must not: run SQL (registry._write calls the store).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from mpi.audit import AuditEntry
from mpi.errors import Problem
from mpi.identity.intake import ParsedRecord, parse_record
from mpi.identity.results import EnrolResult, RecordResult, WriteBatch
from mpi.steward.constraints import CANNOT, online_rule
from mpi.steward.stewardship import rows_of_persons, rows_of_records

if TYPE_CHECKING:
    from mpi.identity.registry import Registry

Undo = list[Callable[[], None]]


@dataclass
class Job:
    """One caller's enrol request (or audit-only write) waiting for a commit."""

    agency: str | None
    cause: str
    audit: list[AuditEntry] = field(default_factory=list)
    parsed: list[ParsedRecord] = field(default_factory=list)
    result: EnrolResult = field(default_factory=lambda: _new_result())
    done: bool = False
    error: BaseException | None = None
    after_commit: list[Callable[[], None]] = field(default_factory=list)


def _new_result() -> EnrolResult:
    return EnrolResult()


def parse_batch(reg: Registry, objects: Sequence[tuple[int, Any]],
                result: EnrolResult) -> list[ParsedRecord]:
    """Validate and re-key every object; problems go to ``result``; in-batch duplicates refused."""
    parsed: list[ParsedRecord] = []
    accepted = reg.accepted_key_ids()
    for row, obj in objects:
        out = parse_record(obj, row=row, server_secret=reg.server_secret,
                           accepted_key_ids=accepted)
        if isinstance(out, list):
            result.problems.extend(out)
        else:
            if accepted is None:
                accepted = {out.key_id}
            parsed.append(out)
    rows_by_sid: dict[str, list[int]] = {}
    for p in parsed:
        rows_by_sid.setdefault(p.source_record_id, []).append(p.row)
    dups = {s for s, rows in rows_by_sid.items() if len(rows) > 1}
    for p in parsed:
        if p.source_record_id in dups:
            result.problems.append(Problem(
                p.row, "source_record_id", "duplicate source_record_id in this batch (rows "
                f"{', '.join(map(str, rows_by_sid[p.source_record_id]))}); none stored",
                p.source_record_id))
    return [p for p in parsed if p.source_record_id not in dups]


class GroupCommit:
    """Leader/follower group commit: whoever finds no leader commits everyone's queued jobs."""

    def __init__(self, reg: Registry) -> None:
        self._reg = reg
        self._cond = threading.Condition()
        self._queue: list[Job] = []
        self._leading = False

    def run(self, job: Job) -> None:
        """Queue ``job`` and return once it is committed; re-raise its failure."""
        with self._cond:
            self._queue.append(job)
            while not job.done and self._leading:
                self._cond.wait()
            if job.done:
                return self._finish(job)
            self._leading = True
            jobs, self._queue = self._queue, []
        try:
            commit_jobs(self._reg, jobs)
        finally:
            with self._cond:
                self._leading = False
                self._cond.notify_all()
        self._finish(job)

    @staticmethod
    def _finish(job: Job) -> None:
        if job.error is not None:
            raise job.error


def commit_jobs(reg: Registry, jobs: list[Job]) -> None:
    """Prepare every job into one batch, write it in one transaction, then publish."""
    with reg.store.write_lock:
        batch = WriteBatch(now=reg.clock())
        n0, persons0 = reg.index.n, len(reg.persons)
        undo: Undo = []
        try:
            for job in jobs:
                batch.audit.extend(job.audit)
                if job.agency is not None and job.parsed:
                    _prepare(reg, job, batch, undo)
            reg._write(batch)
        except BaseException as exc:
            for fn in reversed(undo):
                fn()
            reg.index.truncate(n0)
            for key in reg.persons[persons0:]:
                del reg.person_of[key]
            del reg.persons[persons0:]
            del reg.person_count[persons0:]
            for job in jobs:
                job.error, job.done = exc, True
            return
        for job in jobs:
            for fn in job.after_commit:
                fn()
            job.done = True


def _prepare(reg: Registry, job: Job, batch: WriteBatch, undo: Undo) -> None:
    agency = job.agency
    assert agency is not None
    batch.agencies.add(agency)
    to_match: list[tuple[ParsedRecord, int, int, int]] = []  # record, seq, version, old row
    outcomes: dict[int, RecordResult] = {}
    for p in job.parsed:
        sid_key = (agency, p.source_record_id)
        known = reg.by_sid.get(sid_key)
        if known is None:
            reg.record_seq += 1
            to_match.append((p, reg.record_seq, 1, -1))
        else:
            seq, row, chash, version = known
            if chash == p.content_hash and row >= 0:
                key = reg.persons[int(reg.index.label[row])]
                outcomes[p.row] = RecordResult(p.row, p.source_record_id, key, "unchanged")
                continue
            to_match.append((p, seq, version + 1, row))
    first_row = reg.index.n
    _match_and_assign(reg, agency, to_match, batch, outcomes, undo, cause=job.cause)
    for i, (p, seq, version, _old) in enumerate(to_match):
        sid_key = (agency, p.source_record_id)
        undo.append(partial(_restore_sid, reg, sid_key, reg.by_sid.get(sid_key)))
        reg.by_sid[sid_key] = (seq, first_row + i, p.content_hash, version)
    job.result.results.extend(outcomes[p.row] for p in job.parsed)


def _restore_sid(reg: Registry, sid_key: tuple[str, str],
                 value: tuple[int, int, int, int] | None) -> None:
    if value is None:
        reg.by_sid.pop(sid_key, None)
    else:
        reg.by_sid[sid_key] = value


def _retract(reg: Registry, old: int, lab: int) -> None:
    reg.index.active[old] = True
    reg.person_count[lab] += 1


def _constrained(reg: Registry, seq: int, old_labels: dict[int, int]) -> tuple[int | None, set[int]]:
    """The person a constrained record must join and those it must not (mpi/constraints.py).

    A partner re-matched later in the same batch counts with the person it is leaving
    (``old_labels``: its old row -> person), so whichever of the two is matched first keeps
    the constraint for the other. Runs only for records that carry a constraint, so it may
    scan the row ids, once for all its partners."""
    ident = reg.index.ident[:reg.index.n]
    others = [other for other, _kind in reg.constraints.partners(seq)]
    if len(others) <= 8:  # a few comparisons beat np.isin's set-up
        hit = ident == others[0]
        for other in others[1:]:
            hit |= ident == other
    else:
        hit = np.isin(ident, np.asarray(others, dtype=np.int64))
    label_of: dict[int, int] = {}
    leaving: dict[int, int] = {}
    for r in np.flatnonzero(hit).tolist():  # ascending: a record's newest row wins
        if reg.index.active[r] and reg.index.label[r] >= 0:
            label_of[int(ident[r])] = int(reg.index.label[r])
        elif r in old_labels:
            leaving[int(ident[r])] = old_labels[r]
    for other, lab in leaving.items():
        label_of.setdefault(other, lab)
    return online_rule(reg.constraints, seq, label_of)


def _kept_apart(reg: Registry, lab: int, others: list[int]) -> set[int]:
    """The persons among ``others`` that a cannot-link separates from person ``lab``: a steward
    has said they are different people, so they are not queued as possible duplicates again."""
    mine = reg.index.ident[rows_of_persons(reg, [lab])].tolist()
    partners = [o for s in mine for o, kind in reg.constraints.partners(s) if kind == CANNOT]
    if not partners:
        return set()
    rows = list(rows_of_records(reg, partners).values())
    return set(reg.index.label[rows].tolist()) & set(others)


def _match_and_assign(reg: Registry, agency: str, to_match: list[tuple[ParsedRecord, int, int, int]],
                      batch: WriteBatch, outcomes: dict[int, Any], undo: Undo, *, cause: str) -> None:
    if not to_match:
        return
    old_labels: dict[int, int] = {}
    for _p, _seq, _v, old in to_match:
        if old >= 0 and reg.index.active[old]:
            lab = int(reg.index.label[old])
            old_labels[old] = lab
            reg.index.active[old] = False
            reg.person_count[lab] -= 1
            undo.append(partial(_retract, reg, old, lab))
    matrix = np.stack([p.tokens for p, *_ in to_match])
    cols = {c: np.ascontiguousarray(matrix[:, pos]) for pos, c in reg._cols}
    rows = reg.index.append(cols, np.full(len(to_match), -1, dtype=np.int64),
                            [seq for _p, seq, _v, _o in to_match])
    left, right = reg.index.candidates(rows)
    weights = reg.scorer.weights(reg.index.gather(left), reg.index.gather(right)) \
        if len(left) else np.empty(0)
    order = np.argsort(left, kind="stable")
    left, right, weights = left[order], right[order], weights[order]
    lo_b, hi_b = np.searchsorted(left, rows, side="left"), np.searchsorted(left, rows, side="right")
    link_w, review_w = reg.model.thresholds.link_weight, reg.model.thresholds.review_weight
    # Labels of earlier rows, read once; rows of this batch get theirs in the loop below, so
    # those are read live.
    first_new = int(rows[0])
    label = reg.index.label
    right_l, weights_l, labels_l = right.tolist(), weights.tolist(), label[right].tolist()
    los, his = lo_b.tolist(), hi_b.tolist()
    for i, (p, seq, version, old) in enumerate(to_match):
        row = int(rows[i])
        best: dict[int, float] = {}
        for k in range(los[i], his[i]):
            r, w = right_l[k], weights_l[k]
            lab = labels_l[k] if r < first_new else int(label[r])
            if w > best.get(lab, -np.inf):
                best[lab] = w
        ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
        must_lab: int | None = None
        if reg.constraints and seq in reg.constraints.by_seq:  # steward decisions on this record
            must_lab, banned = _constrained(reg, seq, old_labels)
            ranked = [kv for kv in ranked if kv[0] not in banned]
        old_lab = old_labels.get(old, -1)
        outcome = "updated" if old >= 0 else "new"
        if must_lab is not None:
            lab = must_lab
            outcome = outcome if old >= 0 else "linked"
        elif ranked and ranked[0][1] >= link_w:
            lab = ranked[0][0]
            if old < 0:
                outcome = "linked"
            dups = [(other, w) for other, w in ranked[1:] if w >= link_w]
            apart = _kept_apart(reg, lab, [o for o, _w in dups]) if dups and reg.constraints \
                else set()
            for other, w in dups:
                if other not in apart:
                    reg._review(batch, "possible_duplicate", None, lab, other, w)
        elif old_lab >= 0 and reg.person_count[old_lab] == 0:
            lab = old_lab
        else:
            lab = reg._mint(batch, cause=cause, record_seq=seq)
            if ranked and ranked[0][1] >= review_w:
                outcome = "review" if old < 0 else outcome
                reg._review(batch, "record_person", seq, ranked[0][0], None, ranked[0][1])
        if old_lab >= 0 and lab != old_lab and reg.person_count[old_lab] == 0:
            reg._retire(batch, old_lab, successor=lab, cause=cause, record_seq=seq)
        reg.index.label[row] = lab
        reg.person_count[lab] += 1
        undo.append(partial(reg._uncount, lab))
        key = reg.persons[lab]
        rec = {"record_seq": seq, "agency": agency, "source_record_id": p.source_record_id,
               "version": version, "status": "active", "person_key": key,
               "content_hash": p.content_hash, "key_id": p.key_id,
               "research_consent": p.research_consent, "attributes": p.attributes,
               "tokens": p.tokens.tolist(), "created_at": batch.now, "updated_at": batch.now}
        (batch.changed_rows if version > 1 else batch.new_rows).append(rec)
        outcomes[p.row] = RecordResult(p.row, p.source_record_id, key, outcome)
        if p.key_id not in reg.key_ids:
            reg.key_ids.add(p.key_id)
            batch.new_key_ids.append(p.key_id)
            undo.append(partial(reg.key_ids.discard, p.key_id))
