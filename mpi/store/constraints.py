"""SQL for link constraints: record pairs a steward decided must or cannot share a person.

Owns: the ``link_constraint`` table. A constraint names two records by ``record_seq`` (stored
with ``record_seq_a < record_seq_b``), a ``kind`` (``must_link`` or ``cannot_link``), where it
came from (``source``: ``review``, ``import``, ``merge``, ``split``; ``source_ref`` e.g. the
review item) and the label it was recorded with. Revoked constraints stay, with who revoked
them and why. Must not: decide what a constraint does to clustering (mpi/constraints.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from mpi.store.records import write_rows
from mpi.store.rows import dict_rows, first_row

CONSTRAINT_SCHEMA = pa.schema([
    ("constraint_seq", pa.int64()), ("record_seq_a", pa.int64()), ("record_seq_b", pa.int64()),
    ("kind", pa.string()), ("source", pa.string()), ("source_ref", pa.string()),
    ("label_seq", pa.int64()), ("reason", pa.string()), ("principal_id", pa.string()),
    ("created_at", pa.timestamp("us")), ("revoked_at", pa.timestamp("us")),
    ("revoked_by", pa.string()), ("revoke_reason", pa.string())])
_COLUMNS = ("constraint_seq", "record_seq_a", "record_seq_b", "kind", "source", "source_ref",
            "label_seq", "reason", "principal_id", "created_at", "revoked_at", "revoked_by",
            "revoke_reason")


def next_constraint_seq(cur: duckdb.DuckDBPyConnection) -> int:
    """The next free constraint number."""
    row = first_row(cur.execute(
        "SELECT coalesce(max(constraint_seq), 0) FROM link_constraint").fetchall())
    return int(row[0]) + 1


def insert_constraints(cur: duckdb.DuckDBPyConnection, rows: Sequence[Mapping[str, Any]], *,
                       principal_id: str, source: str, source_ref: str | None,
                       now: dt.datetime) -> list[int]:
    """Append constraints (each with record_seq_a, record_seq_b, kind, label_seq, reason).

    The pair is stored in ascending order; returns the new constraint numbers.
    """
    start = next_constraint_seq(cur)
    out = []
    for i, c in enumerate(rows):
        a, b = sorted((int(c["record_seq_a"]), int(c["record_seq_b"])))
        out.append({"constraint_seq": start + i, "record_seq_a": a, "record_seq_b": b,
                    "kind": str(c["kind"]), "source": source, "source_ref": source_ref,
                    "label_seq": c.get("label_seq"), "reason": c.get("reason"),
                    "principal_id": principal_id, "created_at": now, "revoked_at": None,
                    "revoked_by": None, "revoke_reason": None})
    write_rows(cur, "link_constraint", CONSTRAINT_SCHEMA, out)
    return list(range(start, start + len(out)))


def active_constraints(cur: duckdb.DuckDBPyConnection) -> list[tuple[int, int, int, str]]:
    """(constraint_seq, record_seq_a, record_seq_b, kind) of every unrevoked constraint."""
    rows = cur.execute(
        "SELECT constraint_seq, record_seq_a, record_seq_b, kind FROM link_constraint "
        "WHERE revoked_at IS NULL ORDER BY constraint_seq").fetchall()
    return [(int(s), int(a), int(b), str(k)) for s, a, b, k in rows]


def find_constraint(cur: duckdb.DuckDBPyConnection, constraint_seq: int) -> dict[str, Any] | None:
    """One constraint with both records' agency and source id, or None."""
    rows = _select(cur, "WHERE c.constraint_seq = ?", [constraint_seq], limit=1)
    return rows[0] if rows else None


def list_constraints(cur: duckdb.DuckDBPyConnection, *, status: str = "active",
                     kind: str | None = None, after: int = 0, limit: int = 100,
                     person_key: str | None = None, agency: str | None = None,
                     source_record_id: str | None = None) -> list[dict[str, Any]]:
    """A page of constraints after ``after`` (status active, revoked or all; optional kind;
    optionally only those with a record of ``person_key`` now, of ``agency``, or the record
    ``agency``/``source_record_id``)."""
    where = ["c.constraint_seq > ?"]
    params: list[Any] = [after]
    if person_key is not None:
        where.append("(ra.person_key = ? OR rb.person_key = ?)")
        params += [person_key, person_key]
    if agency is not None and source_record_id is not None:
        where.append("((ra.agency = ? AND ra.source_record_id = ?) "
                     "OR (rb.agency = ? AND rb.source_record_id = ?))")
        params += [agency, source_record_id, agency, source_record_id]
    elif agency is not None:
        where.append("(ra.agency = ? OR rb.agency = ?)")
        params += [agency, agency]
    if status == "active":
        where.append("c.revoked_at IS NULL")
    elif status == "revoked":
        where.append("c.revoked_at IS NOT NULL")
    if kind is not None:
        where.append("c.kind = ?")
        params.append(kind)
    return _select(cur, "WHERE " + " AND ".join(where), params, limit=limit)


def _select(cur: duckdb.DuckDBPyConnection, where: str, params: list[Any], *,
            limit: int) -> list[dict[str, Any]]:
    cols = ", ".join(f"c.{c}" for c in _COLUMNS)
    rel = cur.execute(
        f"SELECT {cols}, ra.agency AS agency_a, ra.source_record_id AS source_record_id_a, "
        "rb.agency AS agency_b, rb.source_record_id AS source_record_id_b "
        "FROM link_constraint c JOIN source_record ra ON ra.record_seq = c.record_seq_a "
        f"JOIN source_record rb ON rb.record_seq = c.record_seq_b {where} "
        "ORDER BY c.constraint_seq LIMIT ?", [*params, int(limit)])
    return dict_rows(rel)


def revoke_constraint(cur: duckdb.DuckDBPyConnection, constraint_seq: int, *, principal_id: str,
                      reason: str, now: dt.datetime) -> None:
    """Mark a constraint revoked (it stays in the table)."""
    cur.execute("UPDATE link_constraint SET revoked_at = ?, revoked_by = ?, revoke_reason = ? "
                "WHERE constraint_seq = ?", [now, principal_id, reason, constraint_seq])

