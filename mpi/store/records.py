"""SQL for source records and their version history.

Owns: inserting, replacing, withdrawing and reading source records. Must not: decide matches.
Arrow tables passed in are registered under a private name for one statement and dropped.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from mpi.store.rows import dict_rows
from mpi.store.rows import first_row as _first

RECORD_COLUMNS = ("record_seq", "agency", "source_record_id", "version", "status", "person_key",
                  "content_hash", "key_id", "research_consent", "attributes", "tokens",
                  "created_at", "updated_at")


def with_table(cur: duckdb.DuckDBPyConnection, name: str, table: pa.Table, sql: str, *,
               params: Sequence[Any] = ()) -> None:
    """Run ``sql`` with ``table`` registered as ``name`` (unregistered afterwards)."""
    cur.register(name, table)
    try:
        cur.execute(sql, list(params)) if params else cur.execute(sql)
    finally:
        with contextlib.suppress(duckdb.Error):  # inside an aborted transaction; keep real error
            cur.unregister(name)


SMALL_BATCH = 64  # below this, parameter binding beats registering an Arrow table
# ... for keyed UPDATEs. INSERTs bind every column of every row, which costs ~0.25 ms a row
# (13 columns with the token list): above a few rows one Arrow table is cheaper (measured
# 13 ms for 50 rows bound vs 2.4-3.7 ms through Arrow, on the 1M registry).
VALUES_ROWS = 8


def run_many(cur: duckdb.DuckDBPyConnection, sql: str, rows: list[list[Any]]) -> None:
    """executemany, but a plain execute for one row (several times cheaper in DuckDB)."""
    if len(rows) == 1:
        cur.execute(sql, rows[0])
    else:
        cur.executemany(sql, rows)


def append_rows(cur: duckdb.DuckDBPyConnection, table: str, columns: Sequence[str],
                batch: pa.Table, *, source: Sequence[str] | None = None) -> None:
    """INSERT ``batch`` into ``table``: ``columns`` are filled from batch columns ``source``.

    ``table`` and the column names are identifiers from this package, never caller values.
    """
    if batch.num_rows == 0:
        return
    source = source or columns
    cols = ", ".join(columns)
    if batch.num_rows <= VALUES_ROWS:
        data = [batch.column(c).to_pylist() for c in source]
        marks = ", ".join("?" * len(columns))
        run_many(cur, f"INSERT INTO {table} ({cols}) VALUES ({marks})",
                  [list(r) for r in zip(*data, strict=True)])
        return
    with_table(cur, "mpi_append", batch,
          f"INSERT INTO {table} ({cols}) SELECT {', '.join(source)} FROM mpi_append")


RECORD_SCHEMA = pa.schema([
    ("record_seq", pa.int64()), ("agency", pa.string()), ("source_record_id", pa.string()),
    ("version", pa.int32()), ("status", pa.string()), ("person_key", pa.string()),
    ("content_hash", pa.int64()), ("key_id", pa.string()), ("research_consent", pa.bool_()),
    ("attributes", pa.string()), ("tokens", pa.list_(pa.int64())),
    ("created_at", pa.timestamp("us")), ("updated_at", pa.timestamp("us"))])


def write_rows(cur: duckdb.DuckDBPyConnection, table: str, schema: pa.Schema,
               rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT dict rows into ``table`` (columns = ``schema``'s names).

    Small batches bind parameters directly (no Arrow: converting Python datetimes to Arrow
    costs failed optional imports on every call); large ones go through one Arrow table.
    """
    if not rows:
        return
    names = schema.names
    if len(rows) <= VALUES_ROWS:
        # One multi-row VALUES statement: executemany runs one statement per row, and a
        # group commit of 16 callers costs 5x more that way.
        marks = "(" + ", ".join("?" * len(names)) + ")"
        cur.execute(f"INSERT INTO {table} ({', '.join(names)}) VALUES "
                    + ", ".join([marks] * len(rows)),
                    [r.get(n) for r in rows for n in names])
        return
    append_rows(cur, table, names, pa.Table.from_pylist(list(rows), schema=schema))


_HISTORY_SELECT = ("SELECT record_seq, version, status, content_hash, key_id, research_consent, "
                   "attributes, tokens, updated_at FROM source_record")


def insert_records(cur: duckdb.DuckDBPyConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert new source records (version 1 lives in source_record until superseded)."""
    write_rows(cur, "source_record", RECORD_SCHEMA, rows)


def _archive_current(cur: duckdb.DuckDBPyConnection, seqs: list[int]) -> None:
    """Copy the current version of these records into record_version before it changes."""
    if not seqs:
        return
    if len(seqs) <= SMALL_BATCH:
        cur.execute("INSERT INTO record_version " + _HISTORY_SELECT + " WHERE record_seq IN ("
                    + ", ".join("?" * len(seqs)) + ")", [int(s) for s in seqs])
        return
    with_table(cur, "mpi_archive", pa.table({"record_seq": pa.array(seqs, pa.int64())}),
          "INSERT INTO record_version " + _HISTORY_SELECT +
          " WHERE record_seq IN (SELECT record_seq FROM mpi_archive)")


_REPLACE_SET = ("version", "status", "person_key", "content_hash", "key_id", "research_consent",
                "attributes", "tokens", "updated_at")


def replace_records(cur: duckdb.DuckDBPyConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write a new version of existing records; the superseded version goes to record_version."""
    _archive_current(cur, [int(r["record_seq"]) for r in rows])
    if len(rows) <= SMALL_BATCH:
        sets = ", ".join(f"{c} = ?" for c in _REPLACE_SET)
        run_many(cur, f"UPDATE source_record SET {sets} WHERE record_seq = ?",
                  [[r.get(c) for c in (*_REPLACE_SET, "record_seq")] for r in rows])
        return
    batch = pa.Table.from_pylist(list(rows), schema=RECORD_SCHEMA)
    with_table(cur, "mpi_changed", batch,
          "UPDATE source_record SET version = c.version, status = c.status, "
          "person_key = c.person_key, content_hash = c.content_hash, key_id = c.key_id, "
          "research_consent = c.research_consent, attributes = c.attributes, "
          "tokens = c.tokens, updated_at = c.updated_at "
          "FROM mpi_changed c WHERE source_record.record_seq = c.record_seq")


def withdraw_records(cur: duckdb.DuckDBPyConnection, record_seqs: Sequence[int], *,
                     now: dt.datetime) -> None:
    """Tombstone records: a new version with status 'withdrawn'."""
    _archive_current(cur, list(record_seqs))
    run_many(cur, "UPDATE source_record SET status = 'withdrawn', version = version + 1, "
              "updated_at = ? WHERE record_seq = ?", [[now, int(s)] for s in record_seqs])


def record_history(cur: duckdb.DuckDBPyConnection, record_seq: int) -> list[dict[str, Any]]:
    """Every version of one record, oldest first (superseded ones plus the current one)."""
    return dict_rows(cur.execute(
        "SELECT record_seq, version, status, content_hash, key_id, research_consent, attributes, "
        "recorded_at FROM record_version WHERE record_seq = ? UNION ALL "
        "SELECT record_seq, version, status, content_hash, key_id, research_consent, attributes, "
        "updated_at FROM source_record WHERE record_seq = ? ORDER BY version",
        [record_seq, record_seq]))


def set_person_keys(cur: duckdb.DuckDBPyConnection, record_seqs: Sequence[int],
                    person_keys: Sequence[str], *, now: dt.datetime) -> None:
    """Point records at new person keys."""
    if len(record_seqs) <= SMALL_BATCH:
        run_many(cur, "UPDATE source_record SET person_key = ?, updated_at = ? "
                  "WHERE record_seq = ?",
                  [[k, now, int(s)] for s, k in zip(record_seqs, person_keys, strict=True)])
        return
    changes = pa.table({"record_seq": pa.array(record_seqs, pa.int64()),
                        "person_key": pa.array(person_keys, pa.string())})
    with_table(cur, "mpi_key_changes", changes,
          "UPDATE source_record SET person_key = c.person_key, updated_at = $now "
          "FROM mpi_key_changes c WHERE source_record.record_seq = c.record_seq"
          .replace("$now", "?"), params=[now])


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
    """Every record's matching state (withdrawn ones too), in storage order."""
    # Streamed in batches and unsorted: sorting or materializing 1M rows with their token
    # lists at once doubles the process's peak memory.
    reader = cur.sql(
        "SELECT record_seq, agency, source_record_id, version, status, person_key, content_hash, "
        "research_consent, tokens FROM source_record").to_arrow_reader(200_000)
    return pa.Table.from_batches(list(reader), schema=reader.schema)


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
