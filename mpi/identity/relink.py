"""Use case: re-link the whole registry with Splink and reconcile the result to stable keys.

Owns: the batch path and its one transaction: export the active records, compute a
``LinkResult`` (edges + clusters) on an engine (DuckDB in process, or Spark through a Parquet
snapshot in a work directory), post-process it (``apply_constraints``), then reconcile it to
stable keys and write the key changes. Both engines share everything after the ``LinkResult``.
Split out of registry.py by use case; like registry.py it combines store, linkage and keys.
Must not: run SQL itself or touch the registry file from Splink or Spark.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from mpi.agency.schema import TOKEN_COLUMNS
from mpi.arrays import positions, sorted_unique
from mpi.audit import AuditEntry
from mpi.errors import Conflict, InvalidInput
from mpi.identity import keys as keyrules
from mpi.identity import regroup
from mpi.identity.results import LinkSummary, WriteBatch
from mpi.linkage import blocking, spark_engine, splink_engine
from mpi.linkage.clustering import cautious_clusters
from mpi.linkage.spark_engine import SparkOptions
from mpi.linkage.splink_engine import LinkResult
from mpi.steward.rescore import rescore_queue
from mpi.store import persons as pstore
from mpi.store import review as review_store

if TYPE_CHECKING:
    import duckdb

    from mpi.identity.registry import Registry
    from mpi.linkage.definition import ModelDefinition
    from mpi.linkage.modelfile import ModelVersion

Writer = Callable[["duckdb.DuckDBPyConnection"], None]

Engine = Literal["duckdb", "spark"]
ENGINES: tuple[Engine, ...] = ("duckdb", "spark")
_POS = {c: i for i, c in enumerate(TOKEN_COLUMNS)}


def link_registry(reg: Registry, *, engine: Engine = "duckdb", spark: SparkOptions | None = None,
                  cause: str = "relink", audit: Sequence[AuditEntry] = (),
                  progress: Callable[[str], None] | None = None,
                  model: ModelVersion | None = None, also: Writer | None = None,
                  live: bool = False) -> LinkSummary:
    """Predict + cluster every active record on ``engine``, then carry keys over to clusters.

    Nothing is written to the registry unless the engine returned a complete result, so a
    failed Spark job leaves the registry as it was; running again is safe. With ``model``
    (a promotion) the link uses that version, ``also`` writes in the same transaction, and the
    registry switches to the version once it is committed.

    ``live`` (a re-link on a running service, Decision 84): Splink computes on a copy of the
    records without the write lock, so online matching keeps serving; the lock is taken only to
    commit, with the records enrolled meanwhile kept in their persons (``with_late_records``).
    If records were updated or withdrawn meanwhile it computes again; after ``LIVE_ATTEMPTS``
    such tries it computes under the lock.
    """

    if engine not in ENGINES:
        raise InvalidInput(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    say = progress or (lambda _m: None)
    if live and model is None and also is None:
        done = _link_live(reg, engine=engine, spark=spark, cause=cause, audit=audit, say=say)
        if done is not None:
            return done
    use = model or reg.model
    with reg.store.write_lock:
        say("exporting records")
        table = reg.model_table(use.definition)
        if table.num_rows == 0:
            if model is not None or also is not None:
                with reg.audited_transaction(audit) as cur:
                    if also is not None:
                        also(cur)
                reg.use_model(use)
            return LinkSummary(0, 0, 0, 0, 0, 0, 0, use.version)
        result = link_result(reg, table, model=use, engine=engine, spark=spark, say=say)
        return write_link(reg, result, cause=cause, say=say, audit=audit, model=use, also=also)


def link_result(reg: Registry, table: pa.Table, *, model: ModelVersion, engine: Engine = "duckdb",
                spark: SparkOptions | None = None,
                say: Callable[[str], None] = lambda _m: None) -> LinkResult:
    """Predict + cluster ``table`` with ``model`` on ``engine``: canonical clusters with the
    constraints applied, the input reconciliation takes. Writes nothing.

    A blocking rule whose blocks would explode on this table is left out, and said
    (mpi/linkage/blocking.py)."""
    raw = _engine_result(reg, table, model=model, engine=engine, spark=spark, say=say)
    return _finish(reg, raw, table, model)


def _engine_result(reg: Registry, table: pa.Table, *, model: ModelVersion, engine: Engine,
                   spark: SparkOptions | None, say: Callable[[str], None]) -> LinkResult:
    """Splink's predict + cluster of ``table``: reads no registry state but settings."""
    definition, dropped = blocking.guard(table, model.definition)
    for msg in dropped:
        say(msg)
    if engine == "spark":
        return _spark_result(reg, table, spark or SparkOptions(), say, model, definition)
    say(f"Splink (DuckDB) predict + cluster over {table.num_rows} records")
    th = model.thresholds
    return splink_engine.predict_and_cluster(
        table, model.params, definition=definition,
        edge_threshold=th.review, cluster_threshold=th.link)


def _finish(reg: Registry, raw: LinkResult, table: pa.Table, model: ModelVersion) -> LinkResult:
    """Canonical clusters, refined for kept-apart persons and constraints (under the lock)."""
    result = cautious(reg, canonical_clusters(raw, records=table),
                      link_threshold=model.thresholds.link)
    return apply_constraints(reg, result, model=model)


LIVE_ATTEMPTS = 2
"""Tries of a live re-link that compute without the write lock before it takes the lock."""
COMMIT_MESSAGE = "write lock held:"
"""How a live re-link's progress message starts once it holds the write lock."""


def generation(reg: Registry) -> tuple[int, int]:
    """What changes with every enrol, update and withdrawal: (rows in the blocking index,
    active rows). Rows are only appended (an update appends a new row), so equal pairs mean
    no record changed. Call it under the write lock."""
    n = reg.index.n
    return n, int(np.count_nonzero(reg.index.active[:n]))


def _link_live(reg: Registry, *, engine: Engine, spark: SparkOptions | None, cause: str,
               audit: Sequence[AuditEntry], say: Callable[[str], None]) -> LinkSummary | None:
    """The re-link computed without the write lock and committed under it, or None when the
    records changed on every attempt."""
    for attempt in range(LIVE_ATTEMPTS):
        with reg.store.write_lock:
            if attempt == 0:
                say("exporting records")
            seen, use = generation(reg), reg.model
            table = reg.model_table(use.definition)
        if table.num_rows == 0:
            return None  # nothing to compute: the locked path writes the audit event
        raw = _engine_result(reg, table, model=use, engine=engine, spark=spark, say=say)
        with reg.store.write_lock:
            now = generation(reg)
            added = now[0] - seen[0]
            if reg.model is not use or now[1] - seen[1] != added:
                say("records changed or were withdrawn while the link computed; computing again")
                continue
            say(f"{COMMIT_MESSAGE} applying constraints and committing"
                + (f" ({added} records enrolled meanwhile keep their persons)" if added else ""))
            result = canonical_clusters(raw, records=table)
            if added:
                result = with_late_records(reg, result, first_row=seen[0])
            result = apply_constraints(reg, cautious(reg, result,
                                                     link_threshold=use.thresholds.link),
                                       model=use)
            return write_link(reg, result, cause=cause, say=say, audit=audit)
    say(f"{COMMIT_MESSAGE} records kept changing while the link computed; computing again "
        "under the lock (online writes wait)")
    return None


def with_late_records(reg: Registry, result: LinkResult, *, first_row: int) -> LinkResult:
    """A canonical result extended by the records enrolled after it was computed (index rows
    from ``first_row`` on, every one of them active and new): each joins the cluster of the
    oldest record its person had in the result, or is a cluster of its own. Online matching
    placed them against the old partition; this keeps that placement through the re-link.
    Call it under the write lock."""
    seq = result.clusters.column("unique_id").to_numpy().astype(np.int64)
    cluster = result.clusters.column("cluster_id").to_numpy().astype(np.int64)
    n = reg.index.n
    late_rows = np.arange(first_row, n, dtype=np.int64)
    late_seq = reg.row_seq[late_rows].astype(np.int64)
    rows, _live = reg.state.rows_for(seq)
    person = reg.index.label[rows]
    first_cluster: dict[int, int] = {}
    for p, c in zip(person.tolist(), cluster.tolist(), strict=True):  # seq ascending: oldest first
        first_cluster.setdefault(int(p), int(c))
    late_cluster = np.array([first_cluster.setdefault(int(p), int(s)) for p, s in zip(
        reg.index.label[late_rows].tolist(), late_seq.tolist(), strict=True)], dtype=np.int64)
    all_seq = np.concatenate([seq, late_seq])
    extended = LinkResult(edges=result.edges, clusters=pa.table({
        "unique_id": pa.array(all_seq, pa.int64()),
        "cluster_id": pa.array(np.concatenate([cluster, late_cluster]), pa.int64())}))
    return canonical_clusters(extended, records=pa.table({"unique_id": pa.array(np.sort(all_seq))}))


def kept_apart(reg: Registry) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
    """For each open ``possible_duplicate`` item whose two persons contradict each other, the
    active records of each. Call it under the write lock.

    Two persons contradict each other when some pair of their records disagrees on a
    comparison (its "else" level: another given name, SSN, date of birth...): twins, a parent
    and a child. Persons whose records only agree or lack the other's fields (a record with
    name and date of birth, another with name and address) are one person's halves a bridging
    record revealed; a re-link may join them."""
    reg.store.flush_journal()  # items of journaled enrols are in the file
    pairs = review_store.open_duplicate_pairs(reg.store.cursor())
    if not pairs:
        return []
    n = reg.index.n
    live = np.flatnonzero(reg.index.active[:n])
    labels, seqs = reg.index.label[live], reg.row_seq[live]
    order = np.argsort(labels, kind="stable")
    labels, seqs = labels[order], seqs[order]
    get = reg.person_of.get
    wanted = np.array([get(k, -1) for pair in pairs for k in pair], dtype=np.int64)
    lo = np.searchsorted(labels, wanted).tolist()
    hi = np.searchsorted(labels, wanted, side="right").tolist()
    sides = [seqs[a:b] for a, b in zip(lo, hi, strict=True)]
    items = list(zip(sides[0::2], sides[1::2], strict=True))
    return [item for item, contra in zip(items, _contradict(reg, items), strict=True) if contra]


def _contradict(reg: Registry, items: Sequence[tuple[npt.NDArray[np.int64],
                                                      npt.NDArray[np.int64]]]) -> list[bool]:
    """Per item, whether any cross pair of its persons' records disagrees on a comparison."""
    owner: list[int] = []
    left: list[npt.NDArray[np.int64]] = []
    right: list[npt.NDArray[np.int64]] = []
    for i, (a, b) in enumerate(items):
        if len(a) and len(b):
            la, lb = np.meshgrid(a, b, indexing="ij")
            left.append(la.ravel())
            right.append(lb.ravel())
            owner.extend([i] * la.size)
    out = [False] * len(items)
    if not owner:
        return out
    rows_l, _ = reg.state.rows_for(np.concatenate(left))
    rows_r, _ = reg.state.rows_for(np.concatenate(right))
    levels = reg.scorer.levels(reg.index.gather(rows_l), reg.index.gather(rows_r))
    disagree = np.zeros(len(owner), dtype=bool)
    for comp, idx in zip(reg.model_definition.comparisons, levels, strict=True):
        disagree |= idx == len(comp.levels)
    for i in np.unique(np.asarray(owner)[disagree]).tolist():
        out[i] = True
    return out


def cautious(reg: Registry, result: LinkResult, *, link_threshold: float) -> LinkResult:
    """A canonical result whose components are refined so that persons online matching kept
    apart for a steward, and whose records contradict each other, stay apart
    (mpi/linkage/clustering.py): a re-link does not undo the online decisions."""
    seq = result.clusters.column("unique_id").to_numpy().astype(np.int64)
    cluster = result.clusters.column("cluster_id").to_numpy().astype(np.int64)
    apart = kept_apart(reg)
    if not apart:
        return result
    rows, live = reg.state.rows_for(seq)
    current = np.where(live, reg.index.label[rows], -1)
    out = cautious_clusters(seq, cluster, result.edges, link_threshold=link_threshold,
                            apart=apart, current=current)
    if out is cluster:
        return result
    return LinkResult(edges=result.edges, clusters=pa.table({
        "unique_id": pa.array(seq, pa.int64()), "cluster_id": pa.array(out, pa.int64())}))


def dry_run(reg: Registry, result: LinkResult) -> tuple[npt.NDArray[Any], npt.NDArray[Any],
                                                        keyrules.Reconciliation]:
    """What reconciling ``result`` would do, writing nothing: (record_seq, current key index,
    reconciliation), the same computation ``link_registry`` commits."""
    seq, cluster = _sorted_by(result.clusters.column("unique_id").to_numpy(),
                              result.clusters.column("cluster_id").to_numpy().astype(np.int64))
    with reg.store.write_lock:  # the result may predate writes made since it was computed
        rows, active = reg.state.rows_for(seq)
        if not bool(active.all()):
            # records withdrawn since (records enrolled since are simply not in the preview)
            raise Conflict("the registry changed while the preview was computed; run it again")
        old_key = reg.index.label[rows].copy()
    rec = keyrules.reconcile(record_seq=seq, old_key=old_key, cluster=cluster,
                             key_rank=np.arange(len(reg.persons), dtype=np.int64))
    return seq, old_key, rec


def spark_work_dir(reg: Registry, fp: str) -> Path:
    """Default Spark work directory: ``<data_dir>/spark-work/<model version>-<input hash>``.

    Named after the input, so re-running after a failure finds (and finishes or reuses) the
    same directory.
    """
    return reg.settings.data_dir / "spark-work" / f"{reg.model.version}-{fp[:16]}"


def _spark_result(reg: Registry, table: pa.Table, options: SparkOptions,
                  say: Callable[[str], None], model: ModelVersion,
                  definition: ModelDefinition) -> LinkResult:
    th = model.thresholds
    spark_engine.require_pyspark()
    fp = spark_engine.fingerprint(table, model.params, definition=definition,
                                  edge_threshold=th.review, cluster_threshold=th.link)
    work_dir = options.work_dir or spark_work_dir(reg, fp)
    return spark_engine.predict_and_cluster(
        table, model.params, work_dir=work_dir, definition=definition,
        edge_threshold=th.review, cluster_threshold=th.link, options=options, fp=fp,
        progress=say)


def canonical_clusters(result: LinkResult, *, records: pa.Table) -> LinkResult:
    """Check the result covers exactly the exported records; return clusters sorted by
    unique_id, each labelled by its smallest record_seq, so every engine hands reconciliation
    the same input whatever cluster ids it produced."""
    seq = result.clusters.column("unique_id").to_numpy().astype(np.int64)
    col = result.clusters.column("cluster_id").combine_chunks()
    expected = records.column("unique_id").to_numpy().astype(np.int64)
    if pa.types.is_integer(col.type):
        seq, ids = _sorted_by(seq, col.to_numpy().astype(np.int64))
        _check_cover(seq, expected)
        if _labels_are_smallest_members(seq, ids):  # DuckDB's clusters already are
            return LinkResult(edges=result.edges, clusters=pa.table({
                "unique_id": pa.array(seq, pa.int64()), "cluster_id": pa.array(ids, pa.int64())}))
    codes = pc.dictionary_encode(col)
    inverse = codes.indices.to_numpy().astype(np.int64)
    seq = result.clusters.column("unique_id").to_numpy().astype(np.int64)
    seq, inverse = _sorted_by(seq, inverse)
    _check_cover(seq, expected)
    smallest = np.full(len(codes.dictionary), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(smallest, inverse, seq)
    clusters = pa.table({"unique_id": pa.array(seq, pa.int64()),
                         "cluster_id": pa.array(smallest[inverse], pa.int64())})
    return LinkResult(edges=result.edges, clusters=clusters)


def _partition_unchanged(seq: npt.NDArray[Any], cluster: npt.NDArray[Any], old_key: npt.NDArray[Any]) -> bool:
    """True when the clusters are exactly the current keys' groups (the steady state).

    ``seq`` is sorted and every cluster is labelled by its smallest member, so each record can
    be compared with its cluster's label record without grouping.
    """
    if len(seq) == 0 or bool((old_key < 0).any()):
        return False
    label_pos = positions(seq, cluster)
    if not bool((old_key[label_pos] == old_key).all()):
        return False
    label_keys = old_key[cluster == seq]
    return len(sorted_unique(label_keys)) == len(label_keys)


def _check_cover(seq: npt.NDArray[Any], expected: npt.NDArray[Any]) -> None:
    if len(seq) != len(expected) or not np.array_equal(seq, _sorted_by(expected)[0]):
        raise Conflict("the link result does not cover exactly the registry's active records; "
                       "nothing was changed")


def _labels_are_smallest_members(seq: npt.NDArray[Any], ids: npt.NDArray[Any]) -> bool:
    """True when every label is a member labelled by itself and no larger than its members,
    i.e. each cluster is already labelled by its smallest record (``seq`` sorted)."""
    if not bool((ids <= seq).all()):
        return False
    pos = np.minimum(positions(seq, ids), len(seq) - 1)
    return bool((seq[pos] == ids).all() and (ids[pos] == ids).all())


def _sorted_by(key: npt.NDArray[Any], *others: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], ...]:
    """``key`` (and ``others`` aligned with it) in ascending key order; no sort if already."""
    if len(key) < 2 or bool((key[1:] >= key[:-1]).all()):
        return (key, *others)
    order = np.argsort(key, kind="stable")
    return (key[order], *(o[order] for o in others))


def apply_constraints(reg: Registry, result: LinkResult, *,
                      model: ModelVersion | None = None) -> LinkResult:
    """Rewrite a canonical ``LinkResult`` so it honours the registry's active must-link and
    cannot-link constraints before keys are reconciled (every engine's result, every promote).

    Clusters holding a constrained record are re-clustered at ``model``'s link threshold
    (default: the active model's): must-links first, then edges by descending probability,
    refusing any union that would join a cannot-linked pair (mpi/constraints.py). With no
    constraint touching the records the result is returned as it is.
    """
    from mpi.steward.constraints import constrain_clusters
    if not reg.constraints:
        return result
    seq = result.clusters.column("unique_id").to_numpy().astype(np.int64)
    cluster = result.clusters.column("cluster_id").to_numpy().astype(np.int64)
    threshold = (model or reg.model).thresholds.link
    out = constrain_clusters(seq, cluster, result.edges, reg.constraints, threshold=threshold)
    if out is cluster:
        return result
    return LinkResult(edges=result.edges, clusters=pa.table({
        "unique_id": pa.array(seq, pa.int64()), "cluster_id": pa.array(out, pa.int64())}))


def write_link(reg: Registry, result: LinkResult, *, cause: str,
               say: Callable[[str], None] = lambda _m: None,
               audit: Sequence[AuditEntry] = (), model: ModelVersion | None = None,
               also: Writer | None = None) -> LinkSummary:
    """Reconcile a complete result (from ``link_result``) to stable keys and write it in one
    transaction with ``also`` and ``audit``; then the registry uses ``model`` (default: the
    active one). The caller holds the write lock since computing the result."""

    use = model or reg.model
    say("reconciling clusters to stable keys")
    seq, cluster = _sorted_by(result.clusters.column("unique_id").to_numpy(),
                              result.clusters.column("cluster_id").to_numpy().astype(np.int64))
    rows = reg.state.rows_for(seq)[0]
    old_key = reg.index.label[rows].copy()
    if _partition_unchanged(seq, cluster, old_key):
        with reg.audited_transaction(audit) as cur:
            if also is not None:
                also(cur)
        reg.use_model(use)
        _rescore(reg, audit, cause)
        return LinkSummary(records=len(seq), persons=int((cluster == seq).sum()), merges=0,
                           splits=0, keys_changed=0, new_keys=0,
                           edges=result.edges.num_rows, model_version=use.version)
    batch = WriteBatch(now=reg.clock())
    st = reg.state
    plan = regroup.plan(st, rows, cluster, batch, cause=cause, model_version=use.version)
    rec = plan.rec
    with st.changes(), reg.audited_transaction(audit) as cur:
        regroup.write(cur, plan, batch)
        review_store.forward_duplicate_items(cur, [(plan.name(k), plan.name(surv))
                                             for k, surv in rec.retired])
        pstore.insert_review_items(cur, _split_items(reg, cur, plan.splits))
        review_store.resolve_settled_items(cur, now=batch.now)
        if also is not None:
            also(cur)
        # The in-memory state follows inside the block: undone if the commit fails. (A
        # model of another definition reloads the state from the store, so it switches last.)
        regroup.apply(st, plan)
    reg.use_model(use)
    _rescore(reg, audit, cause)
    persons = len(sorted_unique(rec.record_key))
    return LinkSummary(records=len(seq), persons=persons, merges=rec.merges,
                       splits=rec.splits, keys_changed=len(plan.changed), new_keys=rec.n_new,
                       edges=result.edges.num_rows, model_version=use.version)


def _rescore(reg: Registry, audit: Sequence[AuditEntry], cause: str) -> None:
    """Rescore the open review items with the model now active (its own transaction, under the
    write lock still held; Decision 86), audited as whoever asked for the re-link."""
    rescore_queue(reg, principal=audit[0].principal if audit else "system", cause=cause)


def _split_items(reg: Registry, cur: duckdb.DuckDBPyConnection,
                 splits: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Copies of the open ``possible_duplicate`` items of every split person for the key that
    took part of its records: the question stays open for all the records it was about, so
    the next re-link keeps them apart too (without it, a re-link after a split could merge
    what the first kept apart)."""
    items = review_store.open_duplicate_items_of(cur, sorted({old for old, _new in splits}))
    out = []
    for old, new in splits:
        for item in items:
            for col in ("person_key", "other_person_key"):
                if item[col] == old:
                    out.append({**item, col: new, "item_seq": reg.state.next_item_seq()})
    return out
