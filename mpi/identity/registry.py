"""Use cases over the registry: enrol, withdraw, link, look up, export.

Owns: combining store, linkage, keys, tokens and intake. Each use case runs in exactly one
transaction: records, key decisions and events commit together or not at all, and the
in-memory matching state changes only after a commit. Must not: run SQL (mpi/store) or import
splink (mpi/linkage).
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import secrets
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from mpi.agency.schema import TOKEN_COLUMNS
from mpi.arrays import zero_as_null
from mpi.audit import AuditChain, AuditEntry, Verification
from mpi.background import Background
from mpi.config import Settings
from mpi.errors import InvalidInput, MpiError, NotFound, Problem, audit_outcome
from mpi.identity import events
from mpi.identity.audit_anchor import AuditAnchor
from mpi.identity.enrolment import GroupCommit, Job, parse_batch
from mpi.identity.intake import parse_record
from mpi.identity.relink import link_registry
from mpi.identity.results import (
    EnrolResult,
    LinkSummary,
    RecordResult,
    WriteBatch,
)
from mpi.identity.scoped_keys import KeyScopes
from mpi.identity.state import MatchState, RecordRef
from mpi.linkage.catalog import find_version_dir, model_dirs
from mpi.linkage.definition import ALL_COLUMNS, ModelDefinition
from mpi.linkage.index import BlockingIndex
from mpi.linkage.modelfile import ModelVersion, default_models_dir, latest_version, load_version
from mpi.linkage.params import probability
from mpi.linkage.scorer import Scorer
from mpi.steward.constraints import ConstraintSet
from mpi.store import Store, writeset
from mpi.store import audit as astore
from mpi.store import persons as pstore
from mpi.store import principals as prstore
from mpi.store import records as rstore
from mpi.store import review as review_store

__all__ = ["EnrolResult", "LinkSummary", "RecordResult", "Registry", "load_server_secret", "utcnow"]

Clock = Callable[[], dt.datetime]
if TYPE_CHECKING:
    from mpi.linkage.spark_engine import SparkOptions
_POSSIBLE = 0.05
JOURNAL_MAX_RECORDS = 64  # write sets up to this many records go through the online journal
_FREEZE_AFTER_RECORDS = 1000
_POS = {c: i for i, c in enumerate(TOKEN_COLUMNS)}


_OPEN: weakref.WeakSet[Registry] = weakref.WeakSet()


def close_all() -> None:
    """Close every registry still open in this process (for command-line error exits)."""
    for reg in list(_OPEN):
        reg.close()


def utcnow() -> dt.datetime:
    """Current UTC time without tzinfo (DuckDB TIMESTAMP)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def load_server_secret(path: Path) -> bytes:
    """Read the server re-key secret, creating it (0600) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32).hex().encode())
    data = bytes.fromhex(path.read_text().strip())
    if len(data) < 32:
        raise InvalidInput(f"server secret {path.name} is shorter than 32 bytes")
    return data



def token_matrix(tokens: pa.Array, n: int) -> npt.NDArray[np.int64]:
    """Stored token lists as an (n, len(TOKEN_COLUMNS)) matrix; a list written under an
    earlier contract revision (shorter: a journal entry replayed after the upgrade) is padded
    with 0 (missing) for the tokens it did not have."""
    width = len(TOKEN_COLUMNS)
    flat: npt.NDArray[np.int64] = tokens.flatten().to_numpy()
    if len(flat) == n * width:
        return flat.reshape(n, width)
    matrix = np.zeros((n, width), dtype=np.int64)
    for i, row in enumerate(tokens.to_pylist()):
        matrix[i, : len(row)] = row[:width]
    return matrix

class Registry:
    """The master person index over one registry file."""

    def __init__(self, settings: Settings, *, clock: Clock = utcnow,
                 refuse_broken_audit: bool = True) -> None:
        self.settings = settings
        self.clock = clock
        self.store = Store(settings.registry_path, now=clock(),
                           memory_limit=settings.duckdb_memory_limit)
        self.server_secret = load_server_secret(settings.secret_path)
        # Agency-scoped person keys (decision 0072): the secret and each agency's setting.
        self.key_scopes = KeyScopes(load_server_secret(settings.key_scope_secret_path),
                                    prstore.key_scopes(self.store.cursor()))
        self.models_dir = settings.models_dir or default_models_dir()
        cur = self.store.cursor()
        active = pstore.active_model_version(cur)
        version = active or latest_version(self.models_dir, name=settings.model_name)
        # A promoted candidate lives in DATA_DIR/models, beside the shipped versions.
        self.model: ModelVersion = load_version(
            find_version_dir(model_dirs(settings), version), version)
        if active is None:
            with self.store.transaction() as tx:
                pstore.record_model_activation(tx, version, now=clock())
        self.scorer = Scorer(self.model_definition, self.model.params)
        # Keyed chain + signed checkpoints (decision 0069): the tail since the latest
        # checkpoint is checked here; a broken one refuses the open unless only verifying.
        try:
            self.audit_anchor = AuditAnchor(settings, cur, clock=clock,
                                            lock=self.store.write_lock, refuse=refuse_broken_audit)
        except MpiError:
            self.store.close()  # release the file and the journal lock for a repair or retry
            raise
        self.audit_chain: AuditChain = self.audit_anchor.chain
        self._committer = GroupCommit(self)
        self.background = Background()  # bulk, training and extract-build jobs (drained on close)
        self._closed = False
        _OPEN.add(self)
        self._load_state()
        self.constraints = ConstraintSet.load(cur)  # steward decisions, honoured everywhere
        # The loaded state is millions of long-lived objects; without this every full
        # collection walks all of them (100+ ms pauses in the online path's tail latency).
        gc.freeze()

    def use_model(self, model: ModelVersion) -> None:
        """Score with ``model`` from now on (call with the write lock held, after the
        transaction that activated it committed)."""
        if model is not self.model:
            rebuild = model.definition is not self.model.definition
            self.model = model
            self.scorer = Scorer(self.model_definition, model.params)
            if rebuild:  # other blocking rules: rebuild the in-memory state from the store
                self.store.flush_journal()
                self._load_state()

    @property
    def model_definition(self) -> ModelDefinition:
        """The model definition the active model follows (its sidecar names it)."""
        return self.model.definition

    # ---- in-memory state (owned by MatchState; these are read-only views) --------------
    def _load_state(self) -> None:
        cur = self.store.cursor()
        table = rstore.load_state(cur)
        index = BlockingIndex(self.model_definition, extra_columns=ALL_COLUMNS)
        self._cols = [(_POS[c], c) for c in index.columns]
        event_seq, item_seq = pstore.max_seqs(cur)
        self.state = MatchState(index, event_seq=event_seq, item_seq=item_seq,
                                record_seq=rstore.max_record_seq(cur),
                                key_ids=set(pstore.linkage_key_ids(cur)),
                                known_agencies=set(rstore.list_agencies(cur)))
        for key in pstore.all_person_keys(cur):
            self.state.add_person(key)
        n = table.num_rows
        if n == 0:
            return
        active = pc.equal(table.column("status"), "active").to_numpy(zero_copy_only=False)
        act_idx = np.flatnonzero(active)
        seqs = table.column("record_seq").to_numpy()
        labels = pc.fill_null(pc.index_in(table.column("person_key"),
                                          value_set=pa.array(self.state.persons, pa.string())),
                              -1).to_numpy().astype(np.int64)
        matrix = token_matrix(table.column("tokens").combine_chunks(), n)
        cols = {c: matrix[act_idx, p] for p, c in self._cols}
        del matrix
        table = table.drop_columns(["tokens"])
        rows = self.state.append_rows(cols, labels[act_idx], seqs[act_idx])
        del cols
        row_of = np.full(n, -1, dtype=np.int64)
        row_of[act_idx] = rows
        self.state.recount(labels[act_idx])
        keys = zip(table.column("agency").to_pylist(), table.column("source_record_id").to_pylist(),
                   strict=True)
        values = map(RecordRef._make, zip(seqs.tolist(), row_of.tolist(),
                                          table.column("content_hash").to_pylist(),
                                          table.column("version").to_pylist(),
                                          table.column("research_consent").to_pylist(),
                                          strict=True))
        self.state.load_refs(dict(zip(keys, values, strict=True)))

    @property
    def index(self) -> BlockingIndex:
        """The blocking index with person labels (read it under the write lock)."""
        return self.state.index

    @property
    def persons(self) -> list[str]:
        """Person keys by label (read-only view of the match state)."""
        return self.state.persons

    @property
    def person_of(self) -> dict[str, int]:
        """Person key -> label (read-only view of the match state)."""
        return self.state.person_of

    @property
    def person_count(self) -> list[int]:
        """Active records per label (read-only view of the match state)."""
        return self.state.person_count

    @property
    def by_sid(self) -> dict[tuple[str, str], RecordRef]:
        """(agency, source_record_id) -> RecordRef (read-only view of the match state)."""
        return self.state.by_sid

    @property
    def event_seq(self) -> int:
        """The last key-event sequence number issued."""
        return self.state.event_seq

    @property
    def row_seq(self) -> npt.NDArray[np.int64]:
        """record_seq of every in-memory index row (a view; rows are append-only)."""
        return self.state.row_seq

    def token_columns(self, matrix: npt.NDArray[np.int64]) -> dict[str, npt.NDArray[np.int64]]:
        """The index's token columns of a (records, TOKEN_COLUMNS) matrix, contiguous."""
        return {c: np.ascontiguousarray(matrix[:, pos]) for pos, c in self._cols}

    # ---- enrol -----------------------------------------------------------------------
    def enrol_records(self, agency: str, objects: Sequence[tuple[int, Any]], *,
                      cause: str = "ingest", audit: Sequence[AuditEntry] = (),
                      all_or_none: bool = False,
                      audit_rejected: Sequence[AuditEntry] = ()) -> EnrolResult:
        """Validate, match and store a batch of token records for one agency, atomically.

        Concurrent callers are committed together (group commit); each returns only after its
        records are durable. Invalid rows are reported in ``problems`` and not stored; with
        ``all_or_none`` any invalid row means nothing is stored and ``audit_rejected`` is
        written instead of ``audit``.
        """
        job = Job(agency=agency, cause=cause, audit=list(audit))
        job.parsed = parse_batch(self, objects, job.result)
        if all_or_none and job.result.problems:
            job.parsed, job.audit = [], list(audit_rejected)
        if not job.parsed and not job.audit:
            return job.result
        self._committer.run(job)
        if len(job.parsed) >= _FREEZE_AFTER_RECORDS:
            # The records just enrolled are long-lived matching state, like the state loaded
            # at open: keep them out of later full collections too (measured on the 1M
            # registry: 1-3 full collections of 0.3 s each per 10k-record chunk before).
            gc.freeze()
        return job.result

    def record_audit(self, entries: Sequence[AuditEntry]) -> None:
        """Append audit events in their own transaction (for reads and refusals)."""
        self._committer.run(Job(agency=None, cause="audit", audit=list(entries)))

    @contextmanager
    def refusals_audited(self, principal: str, action: str, target: str) -> Iterator[None]:
        """Audit a refused use case as its own event (``audit_outcome``) and re-raise."""
        try:
            yield
        except MpiError as exc:
            self.record_audit([AuditEntry(principal, action, target, audit_outcome(exc))])
            raise

    @contextmanager
    def audited_transaction(self, entries: Sequence[AuditEntry]
                            ) -> Iterator[duckdb.DuckDBPyConnection]:
        """One registry transaction for a change and its audit events, sealed on the chain."""
        with self.store.write_lock:
            rows, head = self.audit_chain.seal(entries, now=self.clock())
            with self.store.transaction() as cur:
                yield cur
                astore.append_audit(cur, rows)
            self.audit_chain.advance(head)

    def accepted_key_ids(self) -> set[str] | None:
        """Linkage key ids accepted now (None: the first one seen will be pinned)."""
        if self.settings.accepted_key_ids:
            return set(self.settings.accepted_key_ids)
        return set(self.state.key_ids) if self.state.key_ids else None

    def write_batch(self, batch: WriteBatch) -> None:
        """Write a batch's records, keys, events, reviews and audit events in one transaction."""
        rows, head = self.audit_chain.seal(batch.audit, now=batch.now)
        ws = writeset.make(
            now=batch.now, agencies=sorted(batch.agencies - self.state.known_agencies),
            key_ids=batch.new_key_ids, persons=batch.person_rows, new_rows=batch.new_rows,
            changed_rows=batch.changed_rows, retired=batch.retired, events=batch.events,
            lineage=batch.lineage, reviews=batch.reviews, audit=rows)
        # Small write sets (single-record API calls, audited reads) are made durable in the
        # journal and folded into DuckDB in groups; bulk ones go straight in (Decision 48).
        self.store.write_set(ws, journal=writeset.record_count(ws) <= JOURNAL_MAX_RECORDS)
        self.audit_chain.advance(head)
        self.state.add_agencies(batch.agencies)

    def withdraw_records(self, agency: str, source_record_ids: Sequence[str], *,
                         cause: str = "ingest", audit: Sequence[AuditEntry] = ()) -> EnrolResult:
        """Withdraw records (kept as tombstones); a key left with no records is retired."""
        result = EnrolResult()
        st, version = self.state, self.model.version
        with self.store.write_lock, st.changes():
            batch = WriteBatch(now=self.clock())
            withdrawn: list[int] = []
            seen: set[str] = set()
            for i, sid in enumerate(source_record_ids, start=1):
                ref = st.by_sid.get((agency, sid))
                if sid in seen:
                    result.problems.append(Problem(i, "source_record_id", "repeated in this "
                                                   "request", sid))
                    continue
                seen.add(sid)
                if ref is None or ref.row < 0:
                    result.problems.append(Problem(i, "source_record_id", "no active record "
                                                   "with this id", sid))
                    continue
                person_ix = st.deactivate(ref.row)
                key = st.persons[person_ix]
                if st.person_count[person_ix] == 0:
                    events.retire(st, batch, key, successor=None, cause=cause,
                                  model_version=version, record_seq=ref.record_seq)
                    events.event(st, batch, key, "withdrawn", cause=cause, model_version=version,
                                 record_seq=ref.record_seq)
                st.set_ref((agency, sid), ref._replace(row=-1, version=ref.version + 1))
                withdrawn.append(ref.record_seq)
                result.results.append(RecordResult(i, sid, key, "withdrawn"))
            rows, head = self.audit_chain.seal(audit, now=batch.now)
            if withdrawn or rows:
                with self.store.transaction() as cur:
                    astore.append_audit(cur, rows)
                    if withdrawn:
                        rstore.withdraw_records(cur, withdrawn, now=batch.now)
                    if batch.retired:
                        pstore.retire_persons(cur, batch.retired, now=batch.now)
                    pstore.insert_events(cur, batch.events)
                self.audit_chain.advance(head)
        return result

    def link(self, *, engine: Literal["duckdb", "spark"] = "duckdb",
             spark: SparkOptions | None = None, principal: str = "cli",
             progress: Callable[[str], None] | None = None) -> LinkSummary:
        """Re-link the whole registry with Splink (DuckDB or Spark), reconcile to stable keys."""
        return link_registry(self, engine=engine, spark=spark, progress=progress,
                             audit=[AuditEntry(principal, "persons.relink", "registry",
                                               detail={"engine": engine})])

    # ---- reads -----------------------------------------------------------------------
    def match(self, obj: Any, *, limit: int = 10) -> list[dict[str, Any]]:
        """Score one token record against the registry without storing anything.

        Candidates are graded in the manner of FHIR $match: ``certain`` at or above the link
        threshold, ``probable`` in the review band, ``possible`` above probability 0.05.
        Raises InvalidInput naming the fields at fault.
        """
        out = parse_record(obj, row=1, server_secret=self.server_secret,
                           accepted_key_ids=self.accepted_key_ids())
        if isinstance(out, list):
            raise InvalidInput("invalid record", problems=out)
        cols = {c: out.tokens[pos: pos + 1] for pos, c in self._cols}
        with self.store.write_lock:
            _q, rows = self.index.query(cols)
            if len(rows) == 0:
                return []
            right = self.index.gather(rows)
            left = {c: np.repeat(v, len(rows)) for c, v in cols.items()}
            weights = self.scorer.weights(left, right)
            labels = self.index.label[rows]
            best: dict[int, float] = {}
            for person_ix, w in zip(labels.tolist(), weights.tolist(), strict=True):
                if w > best.get(person_ix, -np.inf):
                    best[person_ix] = w
            keys = {person_ix: self.persons[person_ix] for person_ix in best}
        th = self.model.thresholds
        ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
        result = []
        for person_ix, w in ranked:
            p = probability(w)
            if p < _POSSIBLE:
                break
            grade = "certain" if p >= th.link else "probable" if p >= th.review else "possible"
            result.append({"person_key": keys[person_ix], "match_weight": w, "match_probability": p,
                           "grade": grade})
        return result[:limit]

    def model_table(self, definition: ModelDefinition | None = None) -> pa.Table:
        """Active records as ``unique_id`` + the token columns of ``definition`` (default: the
        active model's; NULL when missing), by record_seq: the linkage executors' input, built
        from memory (equal to the store's ``model_input`` export, without re-reading the file)."""
        columns = (definition or self.model_definition).columns()
        with self.store.write_lock:
            n = self.index.n
            live = np.flatnonzero(self.index.active[:n])
            seq = self.row_seq[live]
            in_order = len(live) == n and bool((seq[1:] > seq[:-1]).all())
            if in_order:
                rows: Any = slice(0, n)
            else:
                order = np.argsort(seq, kind="stable")
                rows, seq = live[order], seq[order]
            data: dict[str, Any] = {"unique_id": pa.array(seq, pa.int64())}
            # Rows below index.n are never rewritten (updates append new rows), so the columns
            # can be shared with the index instead of copied.
            for c in columns:
                data[c] = zero_as_null(self.index.data[c][rows])
        return pa.table(data)

    def get_record(self, agency: str, source_record_id: str) -> dict[str, Any]:
        """An agency's record (any status) with its current person key; raise NotFound."""
        row = rstore.find_record(self.store.cursor(), agency=agency,
                                 source_record_id=source_record_id)
        if row is None:
            raise NotFound("no record with this source_record_id for this agency")
        return row

    def verify_audit(self) -> Verification:
        """Verify the audit hash chain from the first event and against its checkpoints."""
        return self.audit_anchor.verify(astore.list_audit(self.store.cursor()))

    def list_audit(self, *, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """A page of audit events after ``after``."""
        return astore.list_audit(self.store.cursor(), after=after, limit=limit)

    def get_person(self, person_key: str, *, agency: str | None = None) -> dict[str, Any]:
        """A key's status, successors (if retired) and active records; raise NotFound.

        With ``agency``, only that agency's records are listed.
        """
        cur = self.store.cursor()
        row = pstore.find_person(cur, person_key)
        if row is None:
            raise NotFound("no such person key")
        found = review_store.records_by_seq(cur, self._active_record_seqs(person_key))
        records = sorted((str(r["agency"]), str(r["source_record_id"])) for r in found.values()
                         if r["status"] == "active" and r["person_key"] == person_key)
        out = {"person_key": person_key, "status": row["status"],
               "superseded_by": pstore.active_successors(cur, person_key)
               if row["status"] == "retired" else [],
               "records": [r for r in records if agency is None or r[0] == agency]}
        return out

    def _active_record_seqs(self, person_key: str) -> list[int]:
        """record_seqs of a key's active records, from the match state: a lookup by record_seq
        (the primary key) instead of a scan of every record for the key (~50 ms at 1M)."""
        with self.store.write_lock:
            person_ix = self.state.person_of.get(person_key)
            if person_ix is None or self.state.person_count[person_ix] <= 0:
                return []
            return [int(s) for s in self.row_seq[self.state.rows_of_persons([person_ix])]]

    def export_keys(self) -> pa.Table:
        """agency, source_record_id, person_key for every active record."""
        return rstore.active_keys(self.store.cursor())

    def stats(self) -> dict[str, Any]:
        """Counts of records, persons and open review items."""
        cur = self.store.cursor()
        return {"records": rstore.count_records(cur), "persons": pstore.person_counts(cur),
                "review": pstore.open_review_count(cur), "model_version": self.model.version}

    def close(self) -> None:
        """Close the registry file (and let the collector see the loaded state again)."""
        if self._closed:
            return
        self._closed = True
        _OPEN.discard(self)
        self.background.drain()
        try:
            self.audit_anchor.refresh()  # a clean close anchors the head
        finally:
            self.store.close()
        gc.unfreeze()
