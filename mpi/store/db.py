"""The one owner of the registry's DuckDB file: connection, cursors, transactions, migrations.

Owns: opening the file, applying migrations, one cursor per thread and a single write lock
(after Datasette's single write connection). Must not: hold domain logic.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from mpi.errors import ConfigurationError
from mpi.store.migrations import MIGRATIONS

# One DuckDB worker thread: the registry runs many tiny statements, where the scheduler's
# hand-offs cost more than parallelism gains (measured ~25% per statement); bulk linkage runs
# on Splink's own connection.
_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "autoinstall_known_extensions": False, "autoload_known_extensions": False, "threads": 1,
    # Checkpoints rewrite the tables' indexes; at the default 16 MB of WAL a 1M-record
    # registry checkpointed every few ingest chunks (a 1 s stall each time).
    "checkpoint_threshold": "256MB"}


def first_row(rows: list[Any]) -> Any:
    """First row of a fully fetched result, or None."""
    return rows[0] if rows else None


def dict_rows(rel: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every row of an executed query as a dict keyed by column name."""
    names = [d[0] for d in rel.description]
    return [dict(zip(names, r, strict=True)) for r in rel.fetchall()]


class Store:
    """Owns one DuckDB registry file."""

    def __init__(self, path: Path, *, now: dt.datetime | None = None,
                 memory_limit: str | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
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

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor (for reads, or writes inside ``transaction``)."""
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
            cur = self.cursor()
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def checkpoint(self) -> None:
        """Fold the WAL into the database file."""
        with self.write_lock:
            self.cursor().execute("CHECKPOINT")

    def close(self) -> None:
        """Close every thread's cursor and the file."""
        with self._cursors_lock:
            for cur in self._cursors:
                cur.close()
            self._cursors.clear()
        self._local = threading.local()
        self._con.close()
