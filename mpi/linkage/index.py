"""In-memory blocking index over the registry's records, for the online path.

Owns: the columnar copy of every stored record's token columns (int64, 0 = missing), the
active flag and person label of each row, and per-blocking-rule sorted key arrays plus a small
unsorted delta for recent rows. Must not: do I/O, decide matches or know about person keys.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mpi.arrays import sorted_unique
from mpi.linkage.definition import ModelDefinition

_MULT = np.uint64(0x9E3779B97F4A7C15)
_DELTA_LIMIT = 65536
_GROW_MIN = 65536  # rows added at least when the columns grow
_SORTED_QUERY = 4096  # queries with more keys than this look them up in sorted order
I64 = npt.NDArray[np.int64]


def rule_keys(columns: Mapping[str, I64], rule: Sequence[str], salt: int) -> npt.NDArray[np.uint64]:
    """Combined 64-bit key per row for one blocking rule; 0 where any column is missing."""
    first = columns[rule[0]]
    missing = first == 0
    h = np.full(len(first), np.uint64(salt + 1), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for col in rule:
            v = columns[col]
            missing |= v == 0
            h = (h * _MULT) ^ v.view(np.uint64)
            h ^= h >> np.uint64(29)
    h[h == 0] = 1
    h[missing] = 0
    return h


_MASK = (1 << 64) - 1
_MULT_INT = int(_MULT)
_SCALAR_ROWS = 4  # appends and lookups of this few rows take the plain-Python path


def rule_key(values: Mapping[str, int], rule: Sequence[str], salt: int) -> int:
    """``rule_keys`` of one row in plain Python (a single online record: no array set-up)."""
    h = salt + 1
    for col in rule:
        v = values[col]
        if v == 0:
            return 0
        h = ((h * _MULT_INT) & _MASK) ^ (v & _MASK)
        h ^= h >> 29
    return h or 1


class _RuleIndex:
    """Sorted (key, row) arrays plus the rows added since, merged in when they grow.

    The recent rows form one chain per key: ``last`` maps a key to its newest recent row and
    ``prev`` a recent row to the one before it under the same key. Dicts of ints are not
    tracked by the garbage collector, where a list (or array) per key was: with ~80k of those
    after 40k online enrols, every full collection in the server took 10-20 ms (measured)."""

    def __init__(self) -> None:
        self.keys = np.empty(0, dtype=np.uint64)
        self.rows = np.empty(0, dtype=np.int64)
        self.last: dict[int, int] = {}
        self.prev: dict[int, int] = {}
        self.delta_size = 0

    def _put(self, key: int, row: int) -> None:
        before = self.last.get(key)
        if before is not None:
            self.prev[row] = before
        self.last[key] = row

    def _merge_delta(self) -> None:
        self._merge(*self._delta_arrays())
        self.last, self.prev, self.delta_size = {}, {}, 0

    def add(self, keys: npt.NDArray[np.uint64], rows: I64) -> None:
        keep = keys != 0
        keys, rows = keys[keep], rows[keep]
        if len(keys) > _DELTA_LIMIT // 8:
            self._merge(keys, rows)
            return
        for k, r in zip(keys.tolist(), rows.tolist(), strict=True):
            self._put(k, r)
        self.delta_size += len(keys)
        if self.delta_size > _DELTA_LIMIT:
            self._merge_delta()

    def add_one(self, key: int, row: int) -> None:
        """``add`` for one row."""
        if key:
            self._put(key, row)
            self.delta_size += 1
            if self.delta_size > _DELTA_LIMIT:
                self._merge_delta()

    def recent(self, key: int) -> list[int]:
        """Rows added under ``key`` since the last merge, oldest first."""
        row = self.last.get(key)
        if row is None:
            return []
        out = [row]
        prev = self.prev.get
        row = prev(row)
        while row is not None:
            out.append(row)
            row = prev(row)
        out.reverse()
        return out

    def lookup_one(self, key: int) -> list[int]:
        """Rows stored under one key (``lookup`` for one query)."""
        if not key:
            return []
        k = np.uint64(key)
        lo, hi = int(self.keys.searchsorted(k, "left")), int(self.keys.searchsorted(k, "right"))
        found: list[int] = self.rows[lo:hi].tolist() if hi > lo else []
        found.extend(self.recent(key))
        return found

    def _delta_arrays(self) -> tuple[npt.NDArray[np.uint64], I64]:
        ks: list[int] = []
        rs: list[int] = []
        for k in self.last:
            chain = self.recent(k)
            ks.extend([k] * len(chain))
            rs.extend(chain)
        return np.array(ks, dtype=np.uint64), np.array(rs, dtype=np.int64)

    def _merge(self, keys: npt.NDArray[np.uint64], rows: I64) -> None:
        order = np.argsort(keys, kind="stable")
        keys, rows = keys[order], rows[order]
        pos = np.searchsorted(self.keys, keys, side="right")
        self.keys = np.insert(self.keys, pos, keys)
        self.rows = np.insert(self.rows, pos, rows)

    def frozen(self) -> _RuleIndex:
        """A copy that later additions do not change (the sorted arrays are only ever
        replaced, never written in place, so they are shared; the delta is copied)."""
        out = _RuleIndex()
        out.keys, out.rows = self.keys, self.rows
        out.last, out.prev, out.delta_size = dict(self.last), dict(self.prev), self.delta_size
        return out

    def drop_rows_from(self, first_row: int) -> None:
        keep = self.rows < first_row
        self.keys, self.rows = self.keys[keep], self.rows[keep]
        # A key's recent rows ascend along its chain (rows are appended in order, and an undo
        # removes the newest), so each chain is cut back to its newest row below first_row.
        prev = self.prev.get
        last: dict[int, int] = {}
        for k, r in self.last.items():
            kept: int | None = r
            while kept is not None and kept >= first_row:
                kept = prev(kept)
            if kept is not None:
                last[k] = kept
        self.prev = {r: p for r, p in self.prev.items() if r < first_row}
        self.last = last
        self.delta_size = len(last) + len(self.prev)

    def lookup(self, keys: npt.NDArray[np.uint64]) -> tuple[I64, I64]:
        """(query position, row) for every stored row sharing a query's key."""
        if len(keys) > _SORTED_QUERY:
            # Sorted needles walk the sorted keys in order (cache-friendly): ~3x faster for
            # large queries (an extract scores ~10^6 records); results are the same.
            order = np.argsort(keys, kind="stable")
            ks = keys[order]
            lo, hi = np.empty(len(keys), dtype=np.int64), np.empty(len(keys), dtype=np.int64)
            lo[order] = np.searchsorted(self.keys, ks, side="left")
            hi[order] = np.searchsorted(self.keys, ks, side="right")
        else:
            lo = np.searchsorted(self.keys, keys, side="left")
            hi = np.searchsorted(self.keys, keys, side="right")
        counts = hi - lo
        counts[keys == 0] = 0
        q = np.repeat(np.arange(len(keys), dtype=np.int64), counts)
        starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
        rows = self.rows[np.arange(len(q), dtype=np.int64) + starts]
        if not self.delta_size:
            return q, rows
        dq: list[int] = []
        dr: list[int] = []
        last, recent = self.last, self.recent
        for i, k in enumerate(keys.tolist()):
            if k and k in last:
                chain = recent(k)
                dq.extend([i] * len(chain))
                dr.extend(chain)
        if not dq:
            return q, rows
        return (np.concatenate([q, np.array(dq, dtype=np.int64)]),
                np.concatenate([rows, np.array(dr, dtype=np.int64)]))


@dataclass
class _Spare:
    """Bigger arrays being filled in the background: rows below ``n0`` are copied."""

    generation: int
    n0: int
    cap: int
    data: dict[str, I64]
    active: npt.NDArray[np.bool_]
    label: I64
    ident: I64


class BlockingIndex:
    """Rows of token columns with an active flag and a person label, and a blocking index."""

    def __init__(self, definition: ModelDefinition, *, extra_columns: Sequence[str] = ()) -> None:
        self.definition = definition
        # The definition's columns, and any others kept for scoring with another definition
        # (a candidate model of a newer definition, before it is promoted).
        self.columns = tuple(dict.fromkeys((*definition.columns(), *extra_columns)))
        self.n = 0
        self._cap = 0
        self.data: dict[str, I64] = {c: np.empty(0, dtype=np.int64) for c in self.columns}
        self.active = np.empty(0, dtype=bool)
        self.label = np.empty(0, dtype=np.int64)
        self.ident = np.empty(0, dtype=np.int64)  # caller's id of each row (record_seq)
        self._rules = [_RuleIndex() for _ in definition.blocking_rules]
        # Growing the columns copies every row (about 150 ms at 1.1M rows, mostly page faults),
        # so it is done ahead, on a background thread, into ``_spare``; the next append adopts
        # it, copying only what changed meanwhile (Decision 49).
        self._spare: _Spare | None = None
        self._spare_thread: threading.Thread | None = None
        self._generation = 0  # bumped whenever the arrays are replaced: a stale spare is dropped
        self._low = 0  # lowest row count since the spare's copy began (truncate lowers it)
        self._frozen = False  # a snapshot: never appended to

    def snapshot(self) -> BlockingIndex:
        """A read-only copy of the index as it is now, for long reads (an extract's linkage
        evidence) that must not hold the writers' lock. Call with that lock held.

        Cheap: rows below ``n`` are committed and their token columns and ids are never
        rewritten (appends go above ``n``, an undo only removes rows appended after it, and
        growing copies into new arrays), so those are shared; the active flags and person
        labels, which change in place, and each rule's small delta are copied."""
        snap = BlockingIndex.__new__(BlockingIndex)
        n = self.n
        snap.definition, snap.columns, snap.n, snap._cap = self.definition, self.columns, n, n
        snap.data = {c: self.data[c][:n] for c in self.columns}
        snap.ident = self.ident[:n]
        snap.active = self.active[:n].copy()
        snap.label = self.label[:n].copy()
        snap._rules = [r.frozen() for r in self._rules]
        snap._spare, snap._spare_thread, snap._generation, snap._low = None, None, 0, n
        snap._frozen = True
        return snap

    @staticmethod
    def _next_cap(cap: int, need: int) -> int:
        return max(need + max(need // 8, _GROW_MIN), cap + max(cap // 4, _GROW_MIN))

    def _grow(self, need: int) -> None:
        if need <= self._cap:
            return
        cap = self._next_cap(self._cap, need)
        for c in self.columns:
            arr = np.zeros(cap, dtype=np.int64)
            arr[: self.n] = self.data[c][: self.n]
            self.data[c] = arr
        act = np.zeros(cap, dtype=bool)
        act[: self.n] = self.active[: self.n]
        lab = np.full(cap, -1, dtype=np.int64)
        lab[: self.n] = self.label[: self.n]
        ident = np.zeros(cap, dtype=np.int64)
        ident[: self.n] = self.ident[: self.n]
        self.active, self.label, self.ident, self._cap = act, lab, ident, cap
        self._generation += 1
        self._spare = None

    def _prepare_spare(self) -> None:
        """Start copying the rows into bigger arrays on a background thread (once)."""
        if self._spare is not None or (self._spare_thread is not None
                                       and self._spare_thread.is_alive()):
            return
        n0, gen, cap = self.n, self._generation, self._next_cap(self._cap, self._cap + 1)
        self._low = n0
        data, ident = dict(self.data), self.ident  # rows below n0 are only ever appended

        def copy() -> None:
            spare = _Spare(gen, n0, cap, {}, np.empty(cap, dtype=bool),
                           np.empty(cap, dtype=np.int64), np.empty(cap, dtype=np.int64))
            for c, old in data.items():
                arr = np.empty(cap, dtype=np.int64)
                arr[:n0] = old[:n0]
                arr[n0:] = 0
                spare.data[c] = arr
            spare.ident[:n0] = ident[:n0]
            spare.ident[n0:] = 0
            spare.active.fill(False)  # touched now so that adopting them faults no pages
            spare.label.fill(-1)
            self._spare = spare

        self._spare_thread = threading.Thread(target=copy, name="mpi-index-grow", daemon=True)
        self._spare_thread.start()

    def _adopt_spare(self, need: int) -> bool:
        """Switch to the background copy (caller holds the writers' lock); False if none fits."""
        spare, self._spare = self._spare, None
        if spare is None or spare.generation != self._generation or need > spare.cap:
            return False
        lo = min(spare.n0, self._low, self.n)
        n = self.n
        for c in self.columns:
            spare.data[c][lo:n] = self.data[c][lo:n]
        spare.ident[lo:n] = self.ident[lo:n]
        spare.active[:n] = self.active[:n]  # flags and labels change anywhere: copy them all
        spare.label[:n] = self.label[:n]
        self.data, self.ident = spare.data, spare.ident
        self.active, self.label, self._cap = spare.active, spare.label, spare.cap
        self._generation += 1
        return True

    def append(self, columns: Mapping[str, I64], labels: I64,
               idents: I64 | Sequence[int] | None = None) -> I64:
        """Append rows (active) with their labels and ids, index them; returns row numbers."""
        if self._frozen:
            raise RuntimeError("an index snapshot is read-only")
        m = len(labels)
        need = self.n + m
        if (self._spare is not None or need > self._cap) and not self._adopt_spare(need):
            self._grow(need)
        if self._cap and need > self._cap - max(self._cap // 16, _GROW_MIN // 4):
            self._prepare_spare()
        rows = np.arange(self.n, self.n + m, dtype=np.int64)
        for c in self.columns:
            self.data[c][self.n: self.n + m] = columns[c]
        self.active[self.n: self.n + m] = True
        self.label[self.n: self.n + m] = labels
        if idents is not None:
            self.ident[self.n: self.n + m] = idents
        self.n += m
        rules = self.definition.blocking_rules
        if m <= _SCALAR_ROWS:
            for j, row in enumerate(rows.tolist()):
                values = {c: int(columns[c][j]) for c in self.columns}
                for i, rule in enumerate(rules):
                    self._rules[i].add_one(rule_key(values, rule, i), row)
            return rows
        for i, rule in enumerate(rules):
            self._rules[i].add(rule_keys(columns, rule, i), rows)
        return rows

    def rows_for(self, record_seqs: npt.NDArray[Any]) -> tuple[I64, npt.NDArray[np.bool_]]:
        """The active row of each record_seq (by ``ident``), and which were found active (the
        row of one not found is meaningless): the one record -> row lookup."""
        live = np.flatnonzero(self.active[: self.n])
        live_seq = self.ident[live]
        order = np.argsort(live_seq, kind="stable")
        sorted_seq = live_seq[order]
        if len(sorted_seq) == 0:
            return (np.zeros(len(record_seqs), dtype=np.int64),
                    np.zeros(len(record_seqs), dtype=bool))
        pos = np.minimum(np.searchsorted(sorted_seq, record_seqs), len(sorted_seq) - 1)
        return live[order][pos], sorted_seq[pos] == record_seqs

    def truncate(self, n: int) -> None:
        """Forget rows from ``n`` on (undo of an uncommitted append)."""
        if self._frozen:
            raise RuntimeError("an index snapshot is read-only")
        self._low = min(self._low, n)
        for r in self._rules:
            r.drop_rows_from(n)
        self.active[n: self.n] = False
        self.label[n: self.n] = -1
        self.n = n

    def candidates(self, rows: I64) -> tuple[I64, I64]:
        """Candidate pairs (row, earlier active row sharing a blocking key), de-duplicated."""
        if len(rows) <= _SCALAR_ROWS:
            return self._candidates_few(rows)
        cols = {c: self.data[c][rows] for c in self.columns}
        qs, cs = [], []
        for i, rule in enumerate(self.definition.blocking_rules):
            q, c = self._rules[i].lookup(rule_keys(cols, rule, i))
            qs.append(rows[q])
            cs.append(c)
        left = np.concatenate(qs) if qs else np.empty(0, dtype=np.int64)
        right = np.concatenate(cs) if cs else np.empty(0, dtype=np.int64)
        keep = (right < left) & self.active[right]
        left, right = left[keep], right[keep]
        if len(left) == 0:
            return left, right
        pair = sorted_unique(left * np.int64(self._cap + 1) + right)
        return pair // np.int64(self._cap + 1), pair % np.int64(self._cap + 1)

    def _candidates_few(self, rows: I64) -> tuple[I64, I64]:
        left: list[int] = []
        right: list[int] = []
        for row in sorted(rows.tolist()):
            hits = self._active_hits({c: int(self.data[c][row]) for c in self.columns}, below=row)
            left.extend([row] * len(hits))
            right.extend(hits)
        return np.array(left, dtype=np.int64), np.array(right, dtype=np.int64)

    def _active_hits(self, values: Mapping[str, int], *, below: int | None = None) -> list[int]:
        """Sorted active rows sharing a blocking key with one record (rows < ``below`` only)."""
        found: set[int] = set()
        for i, rule in enumerate(self.definition.blocking_rules):
            found.update(self._rules[i].lookup_one(rule_key(values, rule, i)))
        hits = sorted(r for r in found if below is None or r < below)
        if not hits:
            return hits
        return [r for r, a in zip(hits, self.active[hits].tolist(), strict=True) if a]

    def query(self, columns: Mapping[str, I64]) -> tuple[I64, I64]:
        """(query position, active row) for outside records sharing any blocking key."""
        n = len(columns[self.columns[0]])
        if n <= _SCALAR_ROWS:
            ql: list[int] = []
            rl: list[int] = []
            for j in range(n):
                hits = self._active_hits({c: int(columns[c][j]) for c in self.columns})
                ql.extend([j] * len(hits))
                rl.extend(hits)
            return np.array(ql, dtype=np.int64), np.array(rl, dtype=np.int64)
        qs, cs = [], []
        for i, rule in enumerate(self.definition.blocking_rules):
            q, c = self._rules[i].lookup(rule_keys(columns, rule, i))
            qs.append(q)
            cs.append(c)
        q_all = np.concatenate(qs) if qs else np.empty(0, dtype=np.int64)
        r_all = np.concatenate(cs) if cs else np.empty(0, dtype=np.int64)
        keep = self.active[r_all]
        q_all, r_all = q_all[keep], r_all[keep]
        if len(q_all) == 0:
            return q_all, r_all
        pair = sorted_unique(q_all * np.int64(self._cap + 1) + r_all)
        return pair // np.int64(self._cap + 1), pair % np.int64(self._cap + 1)

    def gather(self, rows: I64) -> dict[str, I64]:
        """Token columns of the given rows."""
        return {c: self.data[c][rows] for c in self.columns}
