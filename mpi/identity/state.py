"""The match state in memory: who is who, as the online path and the re-link read it.

Owns: the person keys by label (``persons``, ``person_of``), each person's count of active
records, ``by_sid`` ((agency, source_record_id) -> ``RecordRef``) and the agency of each index
row (built on first use, for agency-scoped keys), the blocking index with its person labels and
active flags, the accepted linkage key ids, the known agencies, and the
event, review-item and record sequence counters. No other module assigns any of these: every
change goes through a verb here (an architecture test checks it).

The one consistency rule, for every writer (enrol, withdraw, re-link, promote, steward merge
and split): hold the registry's write lock, make the changes with these verbs inside
``changes()`` and write the same changes to the store in one transaction inside that block.
If the block raises (the transaction failed), every change made through a verb is undone, so
memory never shows what the store does not hold. Writers that need their own earlier changes
while deciding (an enrol batch matches later records against earlier ones) make them before
the write; the others (re-link, steward decisions) make them after it. Sequence counters are
not rolled back: a gap in a sequence is harmless, a reused number is not.

Must not: run SQL or decide anything (the use cases decide; this applies).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from mpi.linkage.index import BlockingIndex

I64 = npt.NDArray[np.int64]
SidKey = tuple[str, str]


class RecordRef(NamedTuple):
    """Where one agency record is: its record_seq, its index row (-1 once withdrawn), the hash
    of its tokens, its version and its stored research consent (kept by a refresh that does
    not carry the field)."""

    record_seq: int
    row: int
    content_hash: int
    version: int
    research_consent: bool | None = None


class MatchState:
    """Persons, records and counters in memory; changed only through its verbs."""

    def __init__(self, index: BlockingIndex, *, event_seq: int, item_seq: int, record_seq: int,
                 key_ids: set[str], known_agencies: set[str]) -> None:
        self.index = index
        self.persons: list[str] = []
        self.person_of: dict[str, int] = {}
        self.person_count: list[int] = []
        self.by_sid: dict[SidKey, RecordRef] = {}
        self.key_ids = key_ids
        self.known_agencies = known_agencies
        self.event_seq = event_seq
        self.item_seq = item_seq
        self.record_seq = record_seq
        self._undo: list[Callable[[], None]] | None = None
        # The agency of each index row (a code), built on first use by an agency-scoped read
        # and then kept by set_ref; rows are append-only and never change agency.
        self._row_agency: npt.NDArray[np.int32] | None = None
        self._agency_code: dict[str, int] = {}

    # ---- the consistency rule ---------------------------------------------------------
    @contextmanager
    def changes(self) -> Iterator[None]:
        """Undo every change made through a verb in this block if the block raises."""
        if self._undo is not None:  # nested: the outer block owns the undo log
            yield
            return
        n_rows, n_persons, self._undo = self.index.n, len(self.persons), []
        try:
            yield
        except BaseException:
            for fn in reversed(self._undo):
                fn()
            self.index.truncate(n_rows)
            for key in self.persons[n_persons:]:
                del self.person_of[key]
            del self.persons[n_persons:]
            del self.person_count[n_persons:]
            raise
        finally:
            self._undo = None

    def _on_undo(self, fn: Callable[[], None]) -> None:
        if self._undo is not None:
            self._undo.append(fn)

    # ---- counters ---------------------------------------------------------------------
    def next_event_seq(self) -> int:
        """The next key-event sequence number."""
        self.event_seq += 1
        return self.event_seq

    def next_item_seq(self) -> int:
        """The next review-item sequence number."""
        self.item_seq += 1
        return self.item_seq

    def next_record_seq(self) -> int:
        """The next record sequence number."""
        self.record_seq += 1
        return self.record_seq

    # ---- persons ----------------------------------------------------------------------
    def add_person(self, key: str) -> int:
        """Give a new person key the next label (with no records yet); its label."""
        person_ix = len(self.persons)
        self.persons.append(key)
        self.person_of[key] = person_ix
        self.person_count.append(0)
        return person_ix

    def recount(self, labels: I64) -> None:
        """Set every person's count from the labels of all active rows (after loading)."""
        self.person_count[:] = np.bincount(labels, minlength=len(self.persons)).tolist()

    # ---- records and rows -------------------------------------------------------------
    def append_rows(self, cols: dict[str, I64], labels: I64, record_seqs: Sequence[int] | I64
                    ) -> I64:
        """Append index rows (not counted for any person until ``assign``); their row ids."""
        return self.index.append(cols, labels, record_seqs)

    def assign(self, row: int, person_ix: int) -> None:
        """Give an active row (appended unassigned) to person ``person_ix``."""
        self.index.label[row] = person_ix
        self.person_count[person_ix] += 1
        self._on_undo(lambda: self._uncount(person_ix))

    def _uncount(self, person_ix: int) -> None:
        if person_ix < len(self.person_count):  # persons added in the block are dropped anyway
            self.person_count[person_ix] -= 1

    def deactivate(self, row: int) -> int:
        """Take an active row out of matching (an update replaced it, or it was withdrawn);
        the person it counted for."""
        person_ix = int(self.index.label[row])
        self.index.active[row] = False
        self.person_count[person_ix] -= 1

        def undo() -> None:
            self.index.active[row] = True
            self.person_count[person_ix] += 1
        self._on_undo(undo)
        return person_ix

    def move_rows(self, rows: I64, labels: I64) -> int:
        """Give active ``rows`` to the persons ``labels`` (a regrouping); how many moved."""
        old = self.index.label[rows].copy()
        moved = np.flatnonzero(old != labels)
        for o, k in zip(old[moved].tolist(), labels[moved].tolist(), strict=True):
            self.person_count[o] -= 1
            self.person_count[k] += 1
        self.index.label[rows] = labels

        def undo() -> None:
            for o, k in zip(old[moved].tolist(), labels[moved].tolist(), strict=True):
                self.person_count[o] += 1
                self.person_count[k] -= 1
            self.index.label[rows] = old
        self._on_undo(undo)
        return len(moved)

    def set_ref(self, sid_key: SidKey, ref: RecordRef) -> None:
        """Point an agency record id at its current version."""
        before = self.by_sid.get(sid_key)
        self.by_sid[sid_key] = ref
        if ref.row >= 0 and self._row_agency is not None:
            self._tag_row(ref.row, sid_key[0])

        def undo() -> None:
            if before is None:
                self.by_sid.pop(sid_key, None)
            else:
                self.by_sid[sid_key] = before
        self._on_undo(undo)

    def load_refs(self, refs: dict[SidKey, RecordRef]) -> None:
        """Replace ``by_sid`` wholesale (loading the registry)."""
        self.by_sid = refs
        self._row_agency = None

    def add_key_id(self, key_id: str) -> bool:
        """Accept a linkage key id; False when it was known already."""
        if key_id in self.key_ids:
            return False
        self.key_ids.add(key_id)
        self._on_undo(lambda: self.key_ids.discard(key_id))
        return True

    def add_agencies(self, agencies: set[str]) -> None:
        """Remember agencies written to the store (after the write)."""
        self.known_agencies |= agencies

    # ---- reads ------------------------------------------------------------------------
    @property
    def row_seq(self) -> I64:
        """record_seq of every index row (a view; rows are append-only)."""
        return self.index.ident[: self.index.n]

    def rows_for(self, record_seqs: npt.NDArray[Any]) -> tuple[I64, npt.NDArray[np.bool_]]:
        """Index rows of record_seqs, and which of them are active."""
        return self.index.rows_for(record_seqs)

    def rows_of_persons(self, labels: Sequence[int]) -> I64:
        """Index rows of the active records of the given persons, ordered by record_seq."""
        n = self.index.n
        rows = np.flatnonzero(np.isin(self.index.label[:n], np.asarray(labels, dtype=np.int64))
                              & self.index.active[:n])
        return rows[np.argsort(self.row_seq[rows], kind="stable")]

    def _tag_row(self, row: int, agency: str) -> None:
        arr = self._row_agency
        assert arr is not None
        if row >= len(arr):
            grown = np.zeros(max(row + 1, 2 * len(arr)), dtype=np.int32)
            grown[: len(arr)] = arr
            self._row_agency = arr = grown
        arr[row] = self._agency_code.setdefault(agency, len(self._agency_code) + 1)

    def agency_record_counts(self, agency: str, labels: Sequence[int]) -> dict[int, int]:
        """person label -> the agency's active records on it, for the given labels (labels
        without any are left out). Read under the write lock; the first call builds the row ->
        agency table from ``by_sid`` (once per loaded state), but only when there are labels to
        look up: an agency reading an active person starts no per-write tagging."""
        if not labels:
            return {}
        if self._row_agency is None:
            self._row_agency = np.zeros(max(self.index.n, 1024), dtype=np.int32)
            for (ag, _sid), ref in self.by_sid.items():
                if ref.row >= 0:
                    self._tag_row(ref.row, ag)
        code = self._agency_code.get(agency)
        if code is None:
            return {}
        n = self.index.n
        rows = np.flatnonzero(np.isin(self.index.label[:n], np.asarray(labels, dtype=np.int64))
                              & self.index.active[:n])
        rows = rows[rows < len(self._row_agency)]
        rows = rows[self._row_agency[rows] == code]
        found, counts = np.unique(self.index.label[rows], return_counts=True)
        return {int(k): int(c) for k, c in zip(found.tolist(), counts.tolist(), strict=True)}

    def rows_of_records(self, record_seqs: Sequence[int]) -> dict[int, int]:
        """record_seq -> index row, for the given records that are active."""
        seqs = np.asarray(sorted(set(record_seqs)), dtype=np.int64)
        rows, found = self.rows_for(seqs)
        return {int(s): int(r) for s, r, f in zip(seqs.tolist(), rows.tolist(), found.tolist(),
                                                  strict=True) if f}
