"""SQL for the audit log (append-only, hash-chained; see mpi/audit.py).

Owns: appending sealed audit rows, reading the head and paging the log. Must not: update or
delete audit rows.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa

from mpi.store.records import write_rows
from mpi.store.rows import dict_rows, first_row

AUDIT_SCHEMA = pa.schema([
    ("audit_seq", pa.int64()), ("occurred_at", pa.timestamp("us")), ("principal", pa.string()),
    ("action", pa.string()), ("target", pa.string()), ("outcome", pa.string()),
    ("detail", pa.string()), ("prev_hash", pa.string()), ("entry_hash", pa.string())])
_COLS = ", ".join(AUDIT_SCHEMA.names)


def append_audit(cur: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]]) -> None:
    """Append sealed rows."""
    write_rows(cur, "audit_event", AUDIT_SCHEMA, rows)


def audit_head(cur: duckdb.DuckDBPyConnection) -> tuple[int, str] | None:
    """(seq, hash) of the newest event, or None."""
    row = first_row(cur.execute("SELECT audit_seq, entry_hash FROM audit_event "
                                "ORDER BY audit_seq DESC LIMIT 1").fetchall())
    return (int(row[0]), str(row[1])) if row else None


def list_audit(cur: duckdb.DuckDBPyConnection, *, after: int = 0,
               limit: int | None = None) -> list[dict[str, Any]]:
    """Events with audit_seq > after, in order (all of them when limit is None)."""
    sql = f"SELECT {_COLS} FROM audit_event WHERE audit_seq > ? ORDER BY audit_seq"
    params: list[Any] = [after]
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return dict_rows(cur.execute(sql, params))
