"""SQL for what earlier builds released to one researcher: person sets and aggregate tables.

Owns: the ``extract_release`` table (migration 11: per aggregate build, its population digest
and the published tables with their true counts as JSON text) and the reads the cross-release
checks need: which earlier builds could reach a researcher (delivered, or the latest build of
an approved extract, which may still be downloaded) and the persons each included. Must not:
decide what is safe to release (mpi/extract/linked_tables.py and differencing.py do) or put a
person key anywhere but the registry file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb

# Builds that are, or may still be, in the researcher's hands: every delivered build, and the
# latest build of each approved extract (it may be downloaded later). The current extract's
# own undelivered latest build is about to be superseded, so it does not count.
_REACHABLE = """
WITH latest AS (SELECT extract_id, max(build_seq) AS build_seq FROM extract_build
                GROUP BY extract_id)
SELECT b.extract_id, b.build_seq, r.kind, r.spec
FROM extract_build b
JOIN extract_request r ON r.extract_id = b.extract_id
LEFT JOIN latest l ON l.extract_id = b.extract_id AND l.build_seq = b.build_seq
WHERE r.requester_id = ?
  AND (b.first_delivered_at IS NOT NULL
       OR (l.build_seq IS NOT NULL AND r.status = 'approved' AND b.extract_id <> ?))
ORDER BY b.built_at, b.extract_id, b.build_seq"""


def reachable_builds(cur: duckdb.DuckDBPyConnection, *, requester_id: str,
                     current_extract_id: str) -> list[dict[str, Any]]:
    """Builds that reached, or may still reach, the researcher (extract_id, build_seq, kind,
    spec as JSON text), oldest first."""
    rows = cur.execute(_REACHABLE, [requester_id, current_extract_id]).fetchall()
    return [dict(zip(("extract_id", "build_seq", "kind", "spec"), r, strict=True)) for r in rows]


def build_persons(cur: duckdb.DuckDBPyConnection, builds: Sequence[tuple[str, int]]
                  ) -> dict[tuple[str, int], list[frozenset[str]]]:
    """The persons each of these builds included, each as the set of today's keys its key led
    to (itself unless merged away, and every key split off it since, through key lineage)."""
    if not builds:
        return {}
    rows = cur.execute(
        "WITH RECURSIVE inc(extract_id, build_seq, origin, k) AS (\n"
        "    SELECT p.extract_id, p.build_seq, p.person_key, p.person_key FROM extract_person p\n"
        "    JOIN (SELECT unnest(?::VARCHAR[]) AS extract_id, unnest(?::INTEGER[]) AS build_seq) w\n"
        "      ON w.extract_id = p.extract_id AND w.build_seq = p.build_seq\n"
        "    UNION\n"
        "    SELECT i.extract_id, i.build_seq, i.origin, l.to_key FROM key_lineage l\n"
        "    JOIN inc i ON l.from_key = i.k)\n"
        "SELECT i.extract_id, i.build_seq, i.origin, i.k, coalesce(p.status, '') = 'retired'\n"
        "FROM inc i LEFT JOIN person p ON p.person_key = i.k",
        [[x for x, _ in builds], [int(s) for _, s in builds]]).fetchall()
    groups: dict[tuple[str, int], dict[str, set[str]]] = {(str(x), int(s)): {} for x, s in builds}
    for x, s, origin, key, retired in rows:
        group = groups[(str(x), int(s))].setdefault(str(origin), set())
        if not retired:
            group.add(str(key))
    return {b: [frozenset(g) for _, g in sorted(v.items())] for b, v in groups.items()}


def insert_release(cur: duckdb.DuckDBPyConnection, *, extract_id: str, build_seq: int,
                   requester_id: str, population: str, tables: str) -> None:
    """Record the tables an aggregate build published (JSON text, true counts included)."""
    cur.execute("INSERT INTO extract_release VALUES (?, ?, ?, ?, ?)",
                [extract_id, build_seq, requester_id, population, tables])


def released_tables(cur: duckdb.DuckDBPyConnection, builds: Sequence[tuple[str, int]]
                    ) -> list[tuple[str, str]]:
    """(population, tables JSON) of those of these builds that published aggregate tables."""
    if not builds:
        return []
    rows = cur.execute(
        "SELECT r.population, r.tables FROM extract_release r "
        "JOIN (SELECT unnest(?::VARCHAR[]) AS extract_id, unnest(?::INTEGER[]) AS build_seq) w "
        "ON w.extract_id = r.extract_id AND w.build_seq = r.build_seq "
        "ORDER BY r.extract_id, r.build_seq",
        [[x for x, _ in builds], [int(s) for _, s in builds]]).fetchall()
    return [(str(p), str(t)) for p, t in rows]
