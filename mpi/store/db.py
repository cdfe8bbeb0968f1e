"""The one owner of the registry's DuckDB file: connection, cursors, transactions, migrations.

Owns: opening the file, applying migrations, one cursor per thread and a single write lock
(after Datasette's single write connection). Must not: hold domain logic.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import duckdb

from mpi.errors import ConfigurationError
from mpi.files import private_dir, private_file
from mpi.store import writeset
from mpi.store.journal import Journal, JournalBusy, RecoveryMode
from mpi.store.migrations import MIGRATIONS
from mpi.store.rows import first_row

if TYPE_CHECKING:
    from mpi.store.writeset import WriteSet

log = logging.getLogger("mpi.store")
T = TypeVar("T")

# One DuckDB worker thread: the registry runs many tiny statements, where the scheduler's
# hand-offs cost more than parallelism gains (measured ~25% per statement); bulk linkage runs
# on Splink's own connection.
_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "autoinstall_known_extensions": False, "autoload_known_extensions": False, "threads": 1,
    # Checkpoints rewrite the tables' indexes; at the default 16 MB of WAL a 1M-record
    # registry checkpointed every few ingest chunks (a 1 s stall each time).
    "checkpoint_threshold": "256MB"}


# Journaled write sets are folded into DuckDB at least this often, or at once when this many
# are waiting. A fold's cost is mostly per statement, not per row (measured on the 1M
# registry: 31 ms for ~46 write sets every 50 ms, 48 ms for ~140 every 200 ms), and enrols do
# not wait for it, so fewer, larger folds leave more CPU to the online path.
_FOLD_EVERY_S = 0.2
_FOLD_AT = 512


class Store:
    """Owns one DuckDB registry file."""

    def __init__(self, path: Path, *, now: dt.datetime | None = None,
                 memory_limit: str | None = None,
                 journal_recovery: RecoveryMode = "strict") -> None:
        private_dir(path.parent)  # the data directory: 0700 (decision 0066)
        self.path = path
        config = dict(_CONFIG)
        if memory_limit:
            config["memory_limit"] = memory_limit
        try:
            self._con = duckdb.connect(str(path), config=config)
        except duckdb.IOException as exc:
            raise ConfigurationError(
                f"cannot open registry {path.name}: {exc}. Only one process may open a "
                "registry file for writing; stop the other one (e.g. a running `mpi serve`).")\
                from None
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._cursors_lock = threading.Lock()
        self.write_lock = threading.RLock()
        self._migrate(now or dt.datetime.now(dt.UTC).replace(tzinfo=None))
        self._private_files()
        # The online journal (mpi/store/journal.py): write sets acknowledged but not yet folded
        # into DuckDB. Lock order: write_lock, then _fold_lock.
        self._pending: list[tuple[int, WriteSet]] = []
        self._retry: list[tuple[int, WriteSet]] = []  # a fold that failed, folded first next time
        self._fold_lock = threading.Lock()
        try:
            self.journal = Journal(path)
        except JournalBusy as exc:
            self._con.close()
            raise ConfigurationError(f"cannot open registry: {exc}; close it first") from None
        try:
            self._acked = self._folded = self._replay(journal_recovery)
        except BaseException:
            self.journal.close(all_folded=False)  # keep the entries for the next open
            self._con.close()
            raise
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="mpi-journal",
                                         daemon=True)
        self._flusher.start()

    def _migrate(self, now: dt.datetime) -> None:
        con = self._con
        con.execute("CREATE TABLE IF NOT EXISTS schema_version ("
                    "version INTEGER PRIMARY KEY, description VARCHAR NOT NULL, "
                    "applied_at TIMESTAMP NOT NULL)")
        row = first_row(con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall())
        current = int(row[0]) if row else 0
        for version, description, statements in MIGRATIONS:
            if version <= current:
                continue
            con.execute("BEGIN TRANSACTION")
            try:
                for sql in statements:
                    con.execute(sql)
                con.execute("INSERT INTO schema_version VALUES (?, ?, ?)",
                            [version, description, now])
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise

    def schema_version(self) -> int:
        """The highest applied migration."""
        row = first_row(self.cursor().execute("SELECT max(version) FROM schema_version").fetchall())
        return int(row[0]) if row and row[0] is not None else 0

    # ---- the online write journal (mpi/store/journal.py) ------------------------------
    def _replay(self, mode: RecoveryMode) -> int:
        """Fold entries an earlier process acknowledged but did not fold; the last folded seq.

        ``mode`` says what to do with a damaged segment (mpi/store/journal.py, Decision 65)."""
        cur = self._cursor()
        row = first_row(cur.execute("SELECT applied_seq FROM journal_state").fetchall())
        applied = int(row[0]) if row else 0
        entries = self.journal.recover(applied, mode=mode)
        self.journal.next_seq = max(self.journal.next_seq, applied + 1)
        if entries:
            log.info("journal: folding %d acknowledged write sets into the registry",
                     len(entries))
            self._fold(entries)
            applied = entries[-1][0]
        self.journal.start()
        return applied

    def _fold(self, entries: list[tuple[int, WriteSet]]) -> None:
        cur = self._cursor()
        cur.execute("BEGIN TRANSACTION")
        try:
            writeset.apply(cur, [ws for _seq, ws in entries])
            cur.execute("UPDATE journal_state SET applied_seq = ?", [entries[-1][0]])
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")
        self._private_wal()

    def write_set(self, ws: WriteSet, *, journal: bool) -> None:
        """Make a write set durable: appended to the journal (small ones) or written directly.

        Call with ``write_lock`` held. Either way it is durable when this returns."""
        if not journal:
            from mpi.store import writeset
            with self.transaction() as cur:
                writeset.apply(cur, [ws])
            return
        seq = self.journal.append(ws)
        self._pending.append((seq, ws))
        self._acked = seq
        if len(self._pending) >= _FOLD_AT:
            self._wake.set()

    def flush_journal(self) -> None:
        """Fold every acknowledged journaled write set into DuckDB (returns once they are in).

        Takes what is pending and rotates the journal under the write lock, then folds with
        only the fold lock held, so enrols go on appending meanwhile."""
        with self.write_lock:
            batch: list[tuple[int, WriteSet]] = []
            if self._pending:
                self.journal.rotate()
                batch, self._pending = self._pending, []
                self._fold_lock.acquire()  # in snapshot order: taken before the write lock goes
        if not batch:  # only wait for a fold in progress (or retry a failed one): enrols go on
            self._fold_lock.acquire()
        try:
            entries, self._retry = self._retry + batch, []
            if not entries:
                return
            try:
                self._fold(entries)
            except BaseException:
                self._retry = entries
                raise
            self._folded = entries[-1][0]
            self.journal.drop_through(self._folded)
        finally:
            self._fold_lock.release()

    def _flush_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(_FOLD_EVERY_S)
            self._wake.clear()
            if self._folded >= self._acked:
                continue
            try:
                self.flush_journal()
                self.journal.prepare_spare()  # here, so no enrol waits for a file creation
            except Exception as exc:  # retried on the next tick, and by the next reader
                log.error("journal: folding into the registry failed (%s); will retry",
                          type(exc).__name__)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor (for reads, or writes inside ``transaction``).

        Journaled writes are folded into DuckDB first, so every read sees every acknowledged
        write."""
        if self._folded < self._acked:  # also waits for a fold in progress elsewhere
            self.flush_journal()
        return self._cursor()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._con.cursor()
            self._local.cur = cur
            with self._cursors_lock:
                self._cursors.append(cur)
        return cur

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Serialize writers; commit on success, roll back on any error."""
        with self.write_lock:
            cur = self.cursor()  # folds the journal first: writes stay in order
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
            self._private_wal()

    def _private_files(self) -> None:
        """The registry file and its WAL 0600 (at open): DuckDB creates them with the process
        umask (decision 0066)."""
        private_file(self.path)
        self._private_wal()

    def _private_wal(self) -> None:
        """The WAL 0600 after a write: DuckDB creates it anew at the first write after each
        checkpoint (the registry file itself is never recreated)."""
        private_file(self.path.with_name(self.path.name + ".wal"), missing_ok=True)

    @contextmanager
    def read_snapshot(self, under_lock: Callable[[], T]) -> Iterator[tuple[duckdb.DuckDBPyConnection, T]]:
        """A read-only transaction whose snapshot holds every acknowledged write, and what
        ``under_lock`` returns (called while writers wait, so in-memory state taken there is
        the same state). Writers wait only for this set-up, not for the caller's reads."""
        with self.write_lock:
            cur = self.cursor()  # folds the journal: DuckDB holds every acknowledged write
            cur.execute("BEGIN TRANSACTION")
            try:
                # DuckDB fixes a transaction's snapshot at its first read: do it now.
                cur.execute("SELECT applied_seq FROM journal_state").fetchall()
                extra = under_lock()
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        try:
            yield cur, extra
        finally:
            cur.execute("ROLLBACK")  # it only read

    def checkpoint(self) -> None:
        """Fold the WAL into the database file."""
        with self.write_lock:
            self.flush_journal()
            self._cursor().execute("CHECKPOINT")
            self._private_wal()

    def close(self) -> None:
        """Fold the journal, then close every thread's cursor and the file."""
        self._stop.set()
        self._wake.set()
        self._flusher.join()
        try:
            self.flush_journal()  # if this fails, the next open replays the journal
        finally:
            self.journal.close(all_folded=self._folded >= self._acked)
            self._close_duckdb()

    def _close_duckdb(self) -> None:
        try:  # a clean stop leaves everything in mpi.duckdb, nothing only in the WAL (0066)
            self._con.execute("CHECKPOINT")
        except duckdb.Error as exc:  # still durable in the WAL; the next open replays it
            log.warning("registry: checkpoint on close failed (%s)", type(exc).__name__)
        with self._cursors_lock:
            for cur in self._cursors:
                cur.close()
            self._cursors.clear()
        self._local = threading.local()
        self._con.close()
