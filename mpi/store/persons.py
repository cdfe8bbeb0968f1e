"""SQL for person keys, their lineage and key events, review items and linkage key ids.

Owns: the durable side of stable keys. Must not: decide merges or splits (keys.py does).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from mpi.store.records import SMALL_BATCH, run_many, with_table, write_rows
from mpi.store.rows import first_row as _first

EVENT_SCHEMA = pa.schema([
    ("event_seq", pa.int64()), ("person_key", pa.string()), ("event_type", pa.string()),
    ("cause", pa.string()), ("model_version", pa.string()), ("related_key", pa.string()),
    ("record_seq", pa.int64()), ("occurred_at", pa.timestamp("us"))])
LINEAGE_SCHEMA = pa.schema([("from_key", pa.string()), ("to_key", pa.string()),
                            ("kind", pa.string()), ("event_seq", pa.int64())])
REVIEW_SCHEMA = pa.schema([
    ("item_seq", pa.int64()), ("kind", pa.string()), ("record_seq", pa.int64()),
    ("person_key", pa.string()), ("other_person_key", pa.string()),
    ("match_weight", pa.float64()), ("match_probability", pa.float64()),
    ("status", pa.string()), ("model_version", pa.string()), ("created_at", pa.timestamp("us"))])
_PERSON_SCHEMA = pa.schema([
    ("person_key", pa.string()), ("status", pa.string()), ("created_at", pa.timestamp("us")),
    ("retired_at", pa.timestamp("us")), ("minted_event_seq", pa.int64()),
    ("minted_cause", pa.string()), ("minted_model_version", pa.string()),
    ("minted_record_seq", pa.int64())])


def insert_persons(cur: duckdb.DuckDBPyConnection, persons: Sequence[Mapping[str, Any]], *,
                   now: dt.datetime) -> None:
    """Insert newly minted keys (active); a row's minted_* fields are its mint event.

    A row may carry its own ``created_at`` (journaled write sets folded together)."""
    write_rows(cur, "person", _PERSON_SCHEMA,
               [{"created_at": now, **p, "status": "active"} for p in persons])


def retire_persons(cur: duckdb.DuckDBPyConnection, person_keys: Sequence[str], *,
                   now: dt.datetime) -> None:
    """Mark keys retired."""
    if len(person_keys) <= SMALL_BATCH:
        run_many(cur, "UPDATE person SET status = 'retired', retired_at = ? WHERE person_key = ?",
                  [[now, k] for k in person_keys])
        return
    with_table(cur, "mpi_retired", pa.table({"person_key": pa.array(person_keys, pa.string())}),
          "UPDATE person SET status = 'retired', retired_at = ? FROM mpi_retired r "
          "WHERE person.person_key = r.person_key", params=[now])


def insert_events(cur: duckdb.DuckDBPyConnection, events: Sequence[Mapping[str, Any]]) -> None:
    """Append key events."""
    write_rows(cur, "key_change", EVENT_SCHEMA, events)


def insert_lineage(cur: duckdb.DuckDBPyConnection, lineage: Sequence[Mapping[str, Any]]) -> None:
    """Append lineage edges from_key -> to_key (kind merge, split or moved)."""
    write_rows(cur, "key_lineage", LINEAGE_SCHEMA, lineage)


def insert_review_items(cur: duckdb.DuckDBPyConnection,
                        items: Sequence[Mapping[str, Any]]) -> None:
    """Append review items."""
    write_rows(cur, "review_item", REVIEW_SCHEMA, items)


def all_person_keys(cur: duckdb.DuckDBPyConnection) -> list[str]:
    """Every key ever issued, oldest first."""
    # Keys minted in one transaction share created_at; their mint event orders them.
    rows = cur.execute(
        "SELECT p.person_key FROM person p LEFT JOIN (SELECT person_key, min(event_seq) AS seq "
        "FROM key_event WHERE event_type IN ('minted', 'split') GROUP BY person_key) e "
        "ON e.person_key = p.person_key ORDER BY p.created_at, e.seq, p.person_key").fetchall()
    return [str(r[0]) for r in rows]


def find_person(cur: duckdb.DuckDBPyConnection, person_key: str) -> dict[str, Any] | None:
    """A key's status row, or None."""
    row = _first(cur.execute("SELECT person_key, status, created_at, retired_at FROM person "
                      "WHERE person_key = ?", [person_key]).fetchall())
    if row is None:
        return None
    return {"person_key": row[0], "status": row[1], "created_at": row[2], "retired_at": row[3]}


def active_successors(cur: duckdb.DuckDBPyConnection, person_key: str) -> list[str]:
    """Active keys reached from a retired key by following merge/split lineage."""
    rows = cur.execute(
        "WITH RECURSIVE walk(k) AS (SELECT ? UNION SELECT l.to_key FROM key_lineage l "
        "JOIN walk w ON l.from_key = w.k) "
        "SELECT w.k FROM walk w JOIN person p ON p.person_key = w.k "
        "WHERE p.status = 'active' AND w.k <> ? ORDER BY w.k", [person_key, person_key]).fetchall()
    return [str(r[0]) for r in rows]


def agency_record_counts(cur: duckdb.DuckDBPyConnection, person_keys: list[str], *,
                         agency: str) -> dict[str, int]:
    """person key -> the agency's active records on it (keys without any are left out)."""
    if not person_keys:
        return {}
    rows = cur.execute("SELECT person_key, count(*) FROM source_record WHERE agency = ? "
                       "AND status = 'active' AND person_key IN (SELECT unnest(?)) "
                       "GROUP BY person_key", [agency, list(person_keys)]).fetchall()
    return {str(k): int(n) for k, n in rows}


def max_seqs(cur: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """Highest event_seq and item_seq in use."""
    e = _first(cur.execute("SELECT coalesce(max(event_seq), 0) FROM key_event").fetchall())
    i = _first(cur.execute("SELECT coalesce(max(item_seq), 0) FROM review_item").fetchall())
    return (int(e[0]) if e else 0, int(i[0]) if i else 0)


def person_counts(cur: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Keys by status."""
    rows = cur.execute("SELECT status, count(*) FROM person GROUP BY status").fetchall()
    return {str(s): int(n) for s, n in rows}


def open_review_count(cur: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Open review items by kind."""
    rows = cur.execute("SELECT kind, count(*) FROM review_item WHERE status = 'open' "
                       "GROUP BY kind").fetchall()
    return {str(k): int(n) for k, n in rows}


def linkage_key_ids(cur: duckdb.DuckDBPyConnection) -> list[str]:
    """Linkage key ids the registry has accepted."""
    return [str(r[0]) for r in cur.execute("SELECT key_id FROM linkage_key").fetchall()]


def add_linkage_key_id(cur: duckdb.DuckDBPyConnection, key_id: str, *, schema_version: int,
                       now: dt.datetime) -> None:
    """Pin a linkage key id as accepted."""
    cur.execute("INSERT INTO linkage_key VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                [key_id, schema_version, now])


def record_model_activation(cur: duckdb.DuckDBPyConnection, model_version: str, *,
                            now: dt.datetime) -> None:
    """Note which model version became active."""
    cur.execute("INSERT INTO model_activation VALUES (?, ?)", [model_version, now])


def active_model_version(cur: duckdb.DuckDBPyConnection) -> str | None:
    """Most recently activated model version, if any."""
    row = _first(cur.execute("SELECT model_version FROM model_activation ORDER BY activated_at DESC "
                      "LIMIT 1").fetchall())
    return str(row[0]) if row else None
