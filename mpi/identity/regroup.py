"""The one way to apply a regrouping of records into persons: re-link, promote, steward merge
and split all go through it.

Owns: turning a new partition of some records into key decisions (``keys.reconcile``: who
keeps which key, what is minted, retired and forwarded), the rows that records them in a write
batch, writing them (``writeset.write_regroup``, the enrol write order) and, once committed,
moving the records in the match state. Must not: decide the partition (the re-link's
clustering or the steward's request does) or run SQL itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import numpy.typing as npt

from mpi.identity import events
from mpi.identity import keys as keyrules
from mpi.identity.results import WriteBatch
from mpi.identity.state import MatchState
from mpi.store import writeset

I64 = npt.NDArray[np.int64]


@dataclass
class Regroup:
    """Key decisions for a new grouping of some active records (rows of the index)."""

    rows: I64
    seq: I64
    old_key: I64
    rec: keyrules.Reconciliation
    persons: list[str]  # the state's keys by label when planned (new ones come after)
    new_keys: list[str]

    def name(self, k: int) -> str:
        """The key of label ``k`` (an existing person or one this regrouping mints)."""
        n = len(self.persons)
        return self.persons[k] if k < n else self.new_keys[k - n]

    @property
    def changed(self) -> I64:
        """Positions (into ``rows``) of the records whose key changes."""
        return np.flatnonzero(self.rec.record_key != self.old_key)

    @property
    def splits(self) -> list[tuple[str, str]]:
        """(person split, new key taking part of its records) pairs."""
        n = len(self.persons)
        return [(self.name(src), self.name(k)) for k in range(n, n + self.rec.n_new)
                for src in self.rec.minted_from.get(k, [])]


def plan(state: MatchState, rows: I64, cluster: I64, batch: WriteBatch, *, cause: str,
         model_version: str) -> Regroup:
    """Reconcile ``cluster`` (a group id per row; records with equal ids are one person) to
    stable keys and add the person rows, events and lineage it needs to ``batch``."""
    seq = state.row_seq[rows].astype(np.int64)
    old_key = state.index.label[rows].astype(np.int64)
    rec = keyrules.reconcile(record_seq=seq, old_key=old_key, cluster=cluster,
                             key_rank=np.arange(len(state.persons), dtype=np.int64))
    out = Regroup(rows, seq, old_key, rec, list(state.persons),
                  [keyrules.mint_key() for _ in range(rec.n_new)])
    n = len(out.persons)
    for k in range(n, n + rec.n_new):
        sources = rec.minted_from.get(k, [])
        events.person_row(state, batch, out.name(k), cause=cause, model_version=model_version,
                          split_from=out.name(sources[0]) if sources else None)
    for k, surv in rec.retired:
        batch.retired.append(out.name(k))
        events.event(state, batch, out.name(k), "retired", cause=cause,
                     model_version=model_version, related=out.name(surv))
    for frm, to, kind in rec.lineage:
        ev = events.event(state, batch, out.name(frm), f"records_{kind}", cause=cause,
                          model_version=model_version, related=out.name(to))
        batch.lineage.append({"from_key": out.name(frm), "to_key": out.name(to), "kind": kind,
                              "event_seq": ev})
    return out


def groups_to_clusters(seq: I64, group_of_row: I64) -> I64:
    """Cluster ids for arbitrary group ids: each group named by its oldest record_seq."""
    cluster = np.empty(len(seq), dtype=np.int64)
    for g in np.unique(group_of_row).tolist():
        members = group_of_row == g
        cluster[members] = seq[members].min()
    return cluster


def write(cur: duckdb.DuckDBPyConnection, regroup: Regroup, batch: WriteBatch) -> None:
    """Write the regrouping inside the caller's transaction."""
    changed = regroup.changed
    writeset.write_regroup(
        cur, now=batch.now, persons=batch.person_rows, record_seqs=regroup.seq[changed].tolist(),
        person_keys=[regroup.name(int(k)) for k in regroup.rec.record_key[changed]],
        retired=batch.retired, events=batch.events, lineage=batch.lineage,
        reviews=batch.reviews)


def apply(state: MatchState, regroup: Regroup) -> int:
    """After the commit: add the minted persons and move the records; how many moved."""
    for key in regroup.new_keys:
        state.add_person(key)
    return state.move_rows(regroup.rows, regroup.rec.record_key)
