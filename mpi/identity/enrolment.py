"""Use case: enrol token records (online match-or-create), with group commit.

Owns: turning validated records into record versions, key decisions, review items and events;
committing concurrent callers' work in one transaction; undoing in-memory changes when a commit
fails. Split out of registry.py by use case. Must not: run SQL (``Registry.write_batch`` calls
the store) or change the match state except through its verbs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from mpi.audit import AuditEntry
from mpi.errors import Problem
from mpi.identity import events
from mpi.identity import keys as keyrules
from mpi.identity.intake import ParsedRecord, parse_record, with_consent
from mpi.identity.results import EnrolResult, RecordResult, WriteBatch
from mpi.identity.state import RecordRef
from mpi.steward.constraints import CANNOT, online_rule

if TYPE_CHECKING:
    from mpi.identity.registry import Registry

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
    """Prepare every job into one batch and write it in one transaction, under the match
    state's consistency rule (its changes are undone if the write fails); then publish."""
    with reg.store.write_lock:
        batch = WriteBatch(now=reg.clock())
        try:
            with reg.state.changes():
                for job in jobs:
                    batch.audit.extend(job.audit)
                    if job.agency is not None and job.parsed:
                        _prepare(reg, job, batch)
                reg.write_batch(batch)
        except BaseException as exc:
            for job in jobs:
                job.error, job.done = exc, True
            return
        for job in jobs:
            for fn in job.after_commit:
                fn()
            job.done = True


def _prepare(reg: Registry, job: Job, batch: WriteBatch) -> None:
    agency = job.agency
    assert agency is not None
    st = reg.state
    batch.agencies.add(agency)
    to_match: list[tuple[ParsedRecord, int, int, int]] = []  # record, seq, version, old row
    outcomes: dict[int, RecordResult] = {}
    for p in job.parsed:
        ref = st.by_sid.get((agency, p.source_record_id))
        if ref is None:
            to_match.append((p, st.next_record_seq(), 1, -1))
            continue
        if p.research_consent is None and ref.research_consent is not None:
            p = with_consent(p, ref.research_consent)  # a refresh never drops a consent
        if ref.content_hash == p.content_hash and ref.row >= 0:
            key = st.persons[int(st.index.label[ref.row])]
            outcomes[p.row] = RecordResult(p.row, p.source_record_id, key, "unchanged")
        else:
            to_match.append((p, ref.record_seq, ref.version + 1, ref.row))
    first_row = st.index.n
    _match_and_assign(reg, agency, to_match, batch, outcomes, cause=job.cause)
    for i, (p, seq, version, _old) in enumerate(to_match):
        st.set_ref((agency, p.source_record_id),
                   RecordRef(seq, first_row + i, p.content_hash, version, p.research_consent))
    job.result.results.extend(outcomes[p.row] for p in job.parsed)


def _constrained(reg: Registry, seq: int, old_labels: dict[int, int]) -> tuple[int | None, set[int]]:
    """The person a constrained record must join and those it must not (steward/constraints.py).

    A partner re-matched later in the same batch counts with the person it is leaving
    (``old_labels``: its old row -> person), so whichever of the two is matched first keeps
    the constraint for the other. Runs only for records that carry a constraint, so it may
    scan the row ids, once for all its partners."""
    index = reg.state.index
    ident = index.ident[:index.n]
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
        if index.active[r] and index.label[r] >= 0:
            label_of[int(ident[r])] = int(index.label[r])
        elif r in old_labels:
            leaving[int(ident[r])] = old_labels[r]
    for other, person_ix in leaving.items():
        label_of.setdefault(other, person_ix)
    return online_rule(reg.constraints, seq, label_of)


def _kept_apart(reg: Registry, person_ix: int, others: list[int]) -> set[int]:
    """The persons among ``others`` that a cannot-link separates from person ``person_ix``: a steward
    has said they are different people, so they are not queued as possible duplicates again."""
    st = reg.state
    mine = st.index.ident[st.rows_of_persons([person_ix])].tolist()
    partners = [o for s in mine for o, kind in reg.constraints.partners(s) if kind == CANNOT]
    if not partners:
        return set()
    rows = list(st.rows_of_records(partners).values())
    return set(st.index.label[rows].tolist()) & set(others)


def _candidates(reg: Registry, rows: npt.NDArray[np.int64]
                ) -> tuple[list[list[int]], list[list[float]], list[list[int]]]:
    """Per new row: the rows its blocking rules find, their match weights and their person
    labels as they are before this batch (a row of the batch itself reads -1)."""
    st = reg.state
    left, right = st.index.candidates(rows)
    weights = reg.scorer.weights(st.index.gather(left), st.index.gather(right)) \
        if len(left) else np.empty(0)
    order = np.argsort(left, kind="stable")
    left, right, weights = left[order], right[order], weights[order]
    lo_b = np.searchsorted(left, rows, side="left").tolist()
    hi_b = np.searchsorted(left, rows, side="right").tolist()
    right_l, weights_l = right.tolist(), weights.tolist()
    labels_l = st.index.label[right].tolist()
    spans = list(zip(lo_b, hi_b, strict=True))
    return ([right_l[lo:hi] for lo, hi in spans], [weights_l[lo:hi] for lo, hi in spans],
            [labels_l[lo:hi] for lo, hi in spans])


def _match_and_assign(reg: Registry, agency: str, to_match: list[tuple[ParsedRecord, int, int, int]],
                      batch: WriteBatch, outcomes: dict[int, Any], *, cause: str) -> None:
    if not to_match:
        return
    st, version_name = reg.state, reg.model.version
    old_labels = {old: st.deactivate(old) for _p, _s, _v, old in to_match
                  if old >= 0 and st.index.active[old]}
    matrix = np.stack([p.tokens for p, *_ in to_match])
    rows = st.append_rows(reg.token_columns(matrix), np.full(len(to_match), -1, dtype=np.int64),
                          [seq for _p, seq, _v, _o in to_match])
    cand_rows, cand_weights, cand_labels = _candidates(reg, rows)
    th = reg.model.thresholds
    # Labels of earlier rows were read once; rows of this batch get theirs in the loop below,
    # so those are read live.
    first_new, label = int(rows[0]), st.index.label
    for i, (p, seq, version, old) in enumerate(to_match):
        best: dict[int, float] = {}
        for r, w, ix0 in zip(cand_rows[i], cand_weights[i], cand_labels[i], strict=True):
            person_ix = ix0 if r < first_new else int(label[r])
            if w > best.get(person_ix, -np.inf):
                best[person_ix] = w
        ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
        must_person: int | None = None
        if reg.constraints and seq in reg.constraints.by_seq:  # steward decisions on this record
            must_person, banned = _constrained(reg, seq, old_labels)
            ranked = [kv for kv in ranked if kv[0] not in banned]
        old_person = old_labels.get(old, -1)
        d = keyrules.decide_online(ranked, link_weight=th.link_weight,
                                   review_weight=th.review_weight, must=must_person,
                                   update=old >= 0, old=old_person,
                                   old_emptied=old_person >= 0 and st.person_count[old_person] == 0)
        person_ix = d.target if d.target is not None else \
            events.mint(st, batch, cause=cause, model_version=version_name, record_seq=seq)
        if d.duplicates:
            apart = _kept_apart(reg, person_ix, [o for o, _w in d.duplicates]) if reg.constraints \
                else set()
            for other, w in d.duplicates:
                if other not in apart:
                    events.review_item(st, batch, "possible_duplicate", record_seq=None,
                                       person_key=st.persons[person_ix], other_key=st.persons[other],
                                       weight=w, model_version=version_name)
        if d.suggestion is not None:
            events.review_item(st, batch, "record_person", record_seq=seq,
                               person_key=st.persons[d.suggestion[0]], other_key=None,
                               weight=d.suggestion[1], model_version=version_name)
        if d.retire_old:
            events.retire(st, batch, st.persons[old_person], successor=st.persons[person_ix], cause=cause,
                          model_version=version_name, record_seq=seq)
        st.assign(int(rows[i]), person_ix)
        key = st.persons[person_ix]
        rec = {"record_seq": seq, "agency": agency, "source_record_id": p.source_record_id,
               "version": version, "status": "active", "person_key": key,
               "content_hash": p.content_hash, "key_id": p.key_id,
               "research_consent": p.research_consent, "attributes": p.attributes,
               "tokens": p.tokens.tolist(), "created_at": batch.now, "updated_at": batch.now}
        (batch.changed_rows if version > 1 else batch.new_rows).append(rec)
        outcomes[p.row] = RecordResult(p.row, p.source_record_id, key, d.outcome)
        if st.add_key_id(p.key_id):
            batch.new_key_ids.append(p.key_id)
