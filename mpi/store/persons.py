"""SQL for person keys, their lineage and key events, review items and linkage key ids.

Owns: the durable side of stable keys. Must not: decide merges or splits (keys.py does).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import duckdb
import pyarrow as pa

from mpi.store.db import first_row as _first
from mpi.store.records import SMALL_BATCH, _with, append_rows


def insert_persons(cur: duckdb.DuckDBPyConnection, persons: pa.Table) -> None:
    """Insert minted keys: person_key, status, created_at, retired_at."""
    append_rows(cur, "person", ("person_key", "status", "created_at", "retired_at"), persons)


def retire_persons(cur: duckdb.DuckDBPyConnection, retired: pa.Table) -> None:
    """Mark keys (person_key, retired_at) retired."""
    if retired.num_rows <= SMALL_BATCH:
        cur.executemany("UPDATE person SET status = 'retired', retired_at = ? WHERE person_key = ?",
                        [[r["retired_at"], r["person_key"]] for r in retired.to_pylist()])
        return
    _with(cur, "mpi_retired", retired,
          "UPDATE person SET status = 'retired', retired_at = r.retired_at "
          "FROM mpi_retired r WHERE person.person_key = r.person_key")


def insert_events(cur: duckdb.DuckDBPyConnection, events: pa.Table) -> None:
    """Append key events (see migrations for columns)."""
    append_rows(cur, "key_event", ("event_seq", "person_key", "event_type", "cause",
                                   "model_version", "related_key", "record_seq", "occurred_at"),
                events)


def insert_lineage(cur: duckdb.DuckDBPyConnection, lineage: pa.Table) -> None:
    """Append lineage edges from_key -> to_key (kind merge or split)."""
    append_rows(cur, "key_lineage", ("from_key", "to_key", "kind", "event_seq"), lineage)


def insert_review_items(cur: duckdb.DuckDBPyConnection, items: pa.Table) -> None:
    """Append review items."""
    append_rows(cur, "review_item", ("item_seq", "kind", "record_seq", "person_key",
                                     "other_person_key", "match_weight", "match_probability",
                                     "status", "model_version", "created_at"), items)


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


def person_records(cur: duckdb.DuckDBPyConnection, person_key: str) -> list[tuple[str, str]]:
    """(agency, source_record_id) of a key's active records."""
    rows = cur.execute("SELECT agency, source_record_id FROM source_record WHERE person_key = ? "
                       "AND status = 'active' ORDER BY agency, source_record_id",
                       [person_key]).fetchall()
    return [(str(a), str(s)) for a, s in rows]


def key_events(cur: duckdb.DuckDBPyConnection, person_key: str) -> list[dict[str, Any]]:
    """Every event that names a key, oldest first."""
    rel = cur.execute("SELECT event_seq, person_key, event_type, cause, model_version, "
                      "related_key, occurred_at FROM key_event WHERE person_key = ? "
                      "OR related_key = ? ORDER BY event_seq", [person_key, person_key])
    names = [d[0] for d in rel.description]
    return [dict(zip(names, r, strict=True)) for r in rel.fetchall()]


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
