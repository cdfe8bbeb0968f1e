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


def insert_records(cur: duckdb.DuckDBPyConnection, batch: pa.Table) -> None:
    """Insert new source records (and their first version) from an Arrow batch."""
    _with(cur, "mpi_new_records", batch,
          "INSERT INTO source_record SELECT " + ", ".join(RECORD_COLUMNS) + " FROM mpi_new_records")
    _append_versions(cur, batch)


def _append_versions(cur: duckdb.DuckDBPyConnection, batch: pa.Table) -> None:
    _with(cur, "mpi_versions", batch,
          "INSERT INTO record_version SELECT record_seq, version, status, content_hash, key_id, "
          "research_consent, attributes, tokens, updated_at FROM mpi_versions")


def replace_records(cur: duckdb.DuckDBPyConnection, batch: pa.Table) -> None:
    """Write a new version of existing records (same columns as insert) and keep the history."""
    _with(cur, "mpi_changed", batch,
          "UPDATE source_record SET version = c.version, status = c.status, "
          "person_key = c.person_key, content_hash = c.content_hash, key_id = c.key_id, "
          "research_consent = c.research_consent, attributes = c.attributes, "
          "tokens = c.tokens, updated_at = c.updated_at "
          "FROM mpi_changed c WHERE source_record.record_seq = c.record_seq")
    _append_versions(cur, batch)


def withdraw_records(cur: duckdb.DuckDBPyConnection, withdrawn: pa.Table) -> None:
    """Tombstone records (record_seq, updated_at): new version with status 'withdrawn'."""
    _with(cur, "mpi_withdrawn", withdrawn,
          "UPDATE source_record SET status = 'withdrawn', version = version + 1, "
          "updated_at = w.updated_at FROM mpi_withdrawn w "
          "WHERE source_record.record_seq = w.record_seq")
    _with(cur, "mpi_withdrawn", withdrawn,
          "INSERT INTO record_version SELECT s.record_seq, s.version, s.status, s.content_hash, "
          "s.key_id, s.research_consent, s.attributes, s.tokens, s.updated_at "
          "FROM source_record s JOIN mpi_withdrawn w ON s.record_seq = w.record_seq")


def set_person_keys(cur: duckdb.DuckDBPyConnection, changes: pa.Table) -> None:
    """Point records (record_seq, person_key, updated_at) at new person keys."""
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


def count_records(cur: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Record counts by status."""
    rows = cur.execute("SELECT status, count(*) FROM source_record GROUP BY status").fetchall()
    return {str(s): int(n) for s, n in rows}
