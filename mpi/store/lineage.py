"""SQL for a person key's lineage graph: the merges and splits leading into it and out of it.

Owns: reading ``key_lineage`` (edges from_key -> to_key, kind ``merge``, ``split`` or
``moved``) backward from a key (its ancestry) and forward (its descendants), with each edge's
key event (type, cause, time) and the status of every key on the graph. Must not: write, or
decide anything about keys (mpi/identity does).
"""

from __future__ import annotations

from typing import Any

import duckdb

_EDGES = """
WITH RECURSIVE up(k) AS (
    SELECT ?::VARCHAR UNION SELECT l.from_key FROM key_lineage l JOIN up ON l.to_key = up.k),
down(k) AS (
    SELECT ?::VARCHAR UNION SELECT l.to_key FROM key_lineage l JOIN down ON l.from_key = down.k),
edges AS (
    SELECT 'ancestry' AS side, l.* FROM key_lineage l WHERE l.to_key IN (SELECT k FROM up)
    UNION
    SELECT 'descendants' AS side, l.* FROM key_lineage l
    WHERE l.from_key IN (SELECT k FROM down))
SELECT e.side, e.from_key, e.to_key, e.kind, e.event_seq, c.event_type, c.cause,
       c.model_version, c.occurred_at
FROM edges e LEFT JOIN key_change c ON c.event_seq = e.event_seq
ORDER BY e.event_seq, e.from_key, e.to_key
LIMIT ?"""


def lineage_edges(cur: duckdb.DuckDBPyConnection, person_key: str, *,
                  limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` lineage edges into ``person_key`` (side ``ancestry``, over any number
    of steps back) and out of it (side ``descendants``, any number of steps forward), oldest
    event first, each with its key event's type, cause, model version and time."""
    rows = cur.execute(_EDGES, [person_key, person_key, limit]).fetchall()
    return [{"side": r[0], "from_key": r[1], "to_key": r[2], "kind": r[3], "event_seq": r[4],
             "event_type": r[5], "cause": r[6], "model_version": r[7], "occurred_at": r[8]}
            for r in rows]


def key_statuses(cur: duckdb.DuckDBPyConnection, person_keys: list[str]) -> dict[str, Any]:
    """person key -> {status, created_at, retired_at} for the given keys (unknown left out)."""
    if not person_keys:
        return {}
    rows = cur.execute("SELECT person_key, status, created_at, retired_at FROM person "
                       "WHERE person_key IN (SELECT unnest(?))", [person_keys]).fetchall()
    return {str(k): {"status": s, "created_at": c, "retired_at": r} for k, s, c, r in rows}
