"""Use case: re-link the whole registry with Splink and reconcile the result to stable keys.

Owns: the batch path (predict + clustering on the active model, then keys.reconcile) and its
one transaction. Split out of registry.py by use case; like registry.py it combines store,
linkage and keys. Must not: run SQL itself or touch the registry file from Splink.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from mpi import keys as keyrules
from mpi.linkage import splink_engine
from mpi.schema import TOKEN_COLUMNS
from mpi.store import persons as pstore
from mpi.store import records as rstore

if TYPE_CHECKING:
    from mpi.registry import LinkSummary, Registry

_POS = {c: i for i, c in enumerate(TOKEN_COLUMNS)}


def link_registry(reg: Registry, *, cause: str = "relink",
                  progress: Callable[[str], None] | None = None) -> LinkSummary:
    """Predict + cluster every active record with Splink, then carry keys over to clusters."""
    from mpi.registry import LinkSummary, _Batch, _events_table, _persons_table

    say = progress or (lambda _m: None)
    with reg.store.write_lock:
        cols = reg.index.columns
        say("exporting records")
        table = rstore.model_input(reg.store.cursor(), columns=cols,
                                   positions=[_POS[c] for c in cols])
        if table.num_rows == 0:
            return LinkSummary(0, 0, 0, 0, 0, 0, 0, reg.model.version)
        say(f"Splink predict + cluster over {table.num_rows} records")
        th = reg.model.thresholds
        result = splink_engine.predict_and_cluster(
            table, reg.model.params, definition=reg.model_definition,
            edge_threshold=th.review, cluster_threshold=th.link)
        say("reconciling clusters to stable keys")
        clus = result.clusters.sort_by("unique_id")
        seq = clus.column("unique_id").to_numpy()
        cluster = clus.column("cluster_id").to_numpy().astype(np.int64)
        rows = _rows_for(reg, seq)
        old_key = reg.index.label[rows].copy()
        key_rank = np.arange(len(reg.persons), dtype=np.int64)
        rec = keyrules.reconcile(record_seq=seq, old_key=old_key, cluster=cluster,
                                 key_rank=key_rank)
        batch = _Batch(now=reg.clock())
        n_keys = len(reg.persons)
        new_keys = [keyrules.mint_key() for _ in range(rec.n_new)]

        def name(k: int) -> str:
            return reg.persons[k] if k < n_keys else new_keys[k - n_keys]

        for k in range(n_keys, n_keys + rec.n_new):
            key = name(k)
            batch.persons.append(key)
            sources = rec.minted_from.get(k, [])
            reg._event(batch, key, "minted" if not sources else "split", cause=cause,
                       related=name(sources[0]) if sources else None)
        for k, surv in rec.retired:
            batch.retired.append(name(k))
            reg._event(batch, name(k), "retired", cause=cause, related=name(surv))
        for frm, to, kind in rec.lineage:
            ev = reg._event(batch, name(frm), f"records_{kind}", cause=cause, related=name(to))
            batch.lineage.append({"from_key": name(frm), "to_key": name(to), "kind": kind,
                                  "event_seq": ev})
        changed = np.flatnonzero(rec.record_key != old_key)
        changes = pa.table({
            "record_seq": pa.array(seq[changed], pa.int64()),
            "person_key": [name(int(k)) for k in rec.record_key[changed]],
            "updated_at": pa.array([batch.now] * len(changed), pa.timestamp("us"))})
        with reg.store.transaction() as cur:
            if batch.persons:
                pstore.insert_persons(cur, _persons_table(batch))
            if batch.retired:
                pstore.retire_persons(cur, pa.table({
                    "person_key": batch.retired, "retired_at": [batch.now] * len(batch.retired)}))
            if len(changed):
                rstore.set_person_keys(cur, changes)
            if batch.events:
                pstore.insert_events(cur, _events_table(batch.events))
            if batch.lineage:
                pstore.insert_lineage(cur, pa.Table.from_pylist(batch.lineage))
        # Committed: now the in-memory state follows.
        for key in new_keys:
            reg._add_person(key)
        for k in range(len(reg.person_count)):
            reg.person_count[k] = 0
        reg.index.label[rows] = rec.record_key
        for lab in rec.record_key.tolist():
            reg.person_count[lab] += 1
        persons = len(np.unique(rec.record_key))
        return LinkSummary(records=len(seq), persons=persons, merges=rec.merges,
                           splits=rec.splits, keys_changed=len(changed), new_keys=rec.n_new,
                           edges=result.edges.num_rows, model_version=reg.model.version)


def _rows_for(reg: Registry, seq: np.ndarray) -> np.ndarray:
    """In-memory index rows of the given (active) record_seqs."""
    live = np.flatnonzero(reg.index.active[: reg.index.n])
    live_seq = reg.row_seq[live]
    order = np.argsort(live_seq)
    pos = np.searchsorted(live_seq[order], seq)
    return live[order][pos]
