"""SQL for source records and their version history.

Owns: inserting, replacing, withdrawing and reading source records. Must not: decide matches.
Arrow tables passed in are registered under a private name for one statement and dropped.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa

from mpi.store.db import first_row as _first

RECORD_COLUMNS = ("record_seq", "agency", "source_record_id", "version", "status", "person_key",
                  "content_hash", "key_id", "research_consent", "attributes", "tokens",
                  "created_at", "updated_at")


def _with(cur: duckdb.DuckDBPyConnection, name: str, table: pa.Table, sql: str) -> None:
    cur.register(name, table)
    try:
        cur.execute(sql)
    finally:
        with contextlib.suppress(duckdb.Error):  # inside an aborted transaction; keep real error
            cur.unregister(name)


SMALL_BATCH = 64  # below this, parameter binding beats registering an Arrow table


def append_rows(cur: duckdb.DuckDBPyConnection, table: str, columns: Sequence[str],
                batch: pa.Table, *, source: Sequence[str] | None = None) -> None:
    """INSERT ``batch`` into ``table``: ``columns`` are filled from batch columns ``source``.

    ``table`` and the column names are identifiers from this package, never caller values.
    """
    if batch.num_rows == 0:
        return
    source = source or columns
    cols = ", ".join(columns)
    if batch.num_rows <= SMALL_BATCH:
        data = [batch.column(c).to_pylist() for c in source]
        marks = ", ".join("?" * len(columns))
        cur.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})",
                        [list(r) for r in zip(*data, strict=True)])
        return
    _with(cur, "mpi_append", batch,
          f"INSERT INTO {table} ({cols}) SELECT {', '.join(source)} FROM mpi_append")


_HISTORY_SELECT = ("SELECT record_seq, version, status, content_hash, key_id, research_consent, "
                   "attributes, tokens, updated_at FROM source_record")


def insert_records(cur: duckdb.DuckDBPyConnection, batch: pa.Table) -> None:
    """Insert new source records (version 1 lives in source_record until superseded)."""
    append_rows(cur, "source_record", RECORD_COLUMNS, batch)


def _archive_current(cur: duckdb.DuckDBPyConnection, seqs: list[int]) -> None:
    """Copy the current version of these records into record_version before it changes."""
    if len(seqs) <= SMALL_BATCH:
        cur.executemany("INSERT INTO record_version " + _HISTORY_SELECT + " WHERE record_seq = ?",
                        [[s] for s in seqs])
        return
    _with(cur, "mpi_archive", pa.table({"record_seq": pa.array(seqs, pa.int64())}),
          "INSERT INTO record_version " + _HISTORY_SELECT +
          " WHERE record_seq IN (SELECT record_seq FROM mpi_archive)")


_REPLACE_SET = ("version", "status", "person_key", "content_hash", "key_id", "research_consent",
                "attributes", "tokens", "updated_at")


def replace_records(cur: duckdb.DuckDBPyConnection, batch: pa.Table) -> None:
    """Write a new version of existing records; the superseded version goes to record_version."""
    _archive_current(cur, batch.column("record_seq").to_pylist())
    if batch.num_rows <= SMALL_BATCH:
        sets = ", ".join(f"{c} = ?" for c in _REPLACE_SET)
        data = [batch.column(c).to_pylist() for c in (*_REPLACE_SET, "record_seq")]
        cur.executemany(f"UPDATE source_record SET {sets} WHERE record_seq = ?",
                        [list(r) for r in zip(*data, strict=True)])
        return
    _with(cur, "mpi_changed", batch,
          "UPDATE source_record SET version = c.version, status = c.status, "
          "person_key = c.person_key, content_hash = c.content_hash, key_id = c.key_id, "
          "research_consent = c.research_consent, attributes = c.attributes, "
          "tokens = c.tokens, updated_at = c.updated_at "
          "FROM mpi_changed c WHERE source_record.record_seq = c.record_seq")


def withdraw_records(cur: duckdb.DuckDBPyConnection, withdrawn: pa.Table) -> None:
    """Tombstone records (record_seq, updated_at): a new version with status 'withdrawn'."""
    _archive_current(cur, withdrawn.column("record_seq").to_pylist())
    _with(cur, "mpi_withdrawn", withdrawn,
          "UPDATE source_record SET status = 'withdrawn', version = version + 1, "
          "updated_at = w.updated_at FROM mpi_withdrawn w "
          "WHERE source_record.record_seq = w.record_seq")


def record_history(cur: duckdb.DuckDBPyConnection, record_seq: int) -> list[dict[str, Any]]:
    """Every version of one record, oldest first (superseded ones plus the current one)."""
    rel = cur.execute(
        "SELECT record_seq, version, status, content_hash, key_id, research_consent, attributes, "
        "recorded_at FROM record_version WHERE record_seq = ? UNION ALL "
        "SELECT record_seq, version, status, content_hash, key_id, research_consent, attributes, "
        "updated_at FROM source_record WHERE record_seq = ? ORDER BY version",
        [record_seq, record_seq])
    names = [d[0] for d in rel.description]
    return [dict(zip(names, r, strict=True)) for r in rel.fetchall()]


def set_person_keys(cur: duckdb.DuckDBPyConnection, changes: pa.Table) -> None:
    """Point records (record_seq, person_key, updated_at) at new person keys."""
    if changes.num_rows <= SMALL_BATCH:
        cur.executemany("UPDATE source_record SET person_key = ?, updated_at = ? "
                        "WHERE record_seq = ?",
                        [[r["person_key"], r["updated_at"], r["record_seq"]]
                         for r in changes.to_pylist()])
        return
    _with(cur, "mpi_key_changes", changes,
          "UPDATE source_record SET person_key = c.person_key, updated_at = c.updated_at "
          "FROM mpi_key_changes c WHERE source_record.record_seq = c.record_seq")


def find_record(cur: duckdb.DuckDBPyConnection, *, agency: str,
                source_record_id: str) -> dict[str, Any] | None:
    """One record's current state, or None."""
    rel = cur.execute(
        "SELECT record_seq, agency, source_record_id, version, status, person_key, key_id, "
        "research_consent, attributes, created_at, updated_at FROM source_record "
        "WHERE agency = ? AND source_record_id = ?", [agency, source_record_id])
    row = _first(rel.fetchall())
    if row is None:
        return None
    names = [d[0] for d in rel.description]
    return dict(zip(names, row, strict=True))


def load_state(cur: duckdb.DuckDBPyConnection) -> pa.Table:
    """Every record's matching state (withdrawn ones too), in record_seq order."""
    return cur.sql(
        "SELECT record_seq, agency, source_record_id, version, status, person_key, content_hash, "
        "tokens FROM source_record ORDER BY record_seq").to_arrow_table()


def model_input(cur: duckdb.DuckDBPyConnection, *, columns: Sequence[str],
                positions: Sequence[int]) -> pa.Table:
    """Active records as ``unique_id`` + one BIGINT column per model token column."""
    # Column names come from the schema module (identifiers, not values); positions are ints.
    parts = [f"nullif(tokens[{int(p) + 1}], 0) AS {c}" for c, p in zip(columns, positions, strict=True)
             if c.isidentifier()]
    sql = ("SELECT record_seq AS unique_id, " + ", ".join(parts) +
           " FROM source_record WHERE status = 'active' ORDER BY record_seq")
    return cur.sql(sql).to_arrow_table()


def active_keys(cur: duckdb.DuckDBPyConnection) -> pa.Table:
    """agency, source_record_id, person_key of every active record, sorted."""
    return cur.sql(
        "SELECT agency, source_record_id, person_key FROM source_record WHERE status = 'active' "
        "ORDER BY agency, source_record_id").to_arrow_table()


def max_record_seq(cur: duckdb.DuckDBPyConnection) -> int:
    """Highest record_seq in use (0 when empty)."""
    row = _first(cur.execute("SELECT coalesce(max(record_seq), 0) FROM source_record").fetchall())
    return int(row[0]) if row else 0


def ensure_agency(cur: duckdb.DuckDBPyConnection, agency: str, *, now: dt.datetime) -> None:
    """Register an agency name if new."""
    cur.execute("INSERT INTO agency VALUES (?, ?) ON CONFLICT DO NOTHING", [agency, now])


def list_agencies(cur: duckdb.DuckDBPyConnection) -> list[str]:
    """Registered agency names."""
    return [str(r[0]) for r in cur.execute("SELECT agency FROM agency ORDER BY agency").fetchall()]


def count_records(cur: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Record counts by status."""
    rows = cur.execute("SELECT status, count(*) FROM source_record GROUP BY status").fetchall()
    return {str(s): int(n) for s, n in rows}
