"""SQL for the human behind a principal (``principal_human``, Decision 80).

Owns: reading and writing the ``principal_human`` table: one row per principal that has a
human identity, written once and never changed. Must not: decide who may hold which identity
or act in which capacity (mpi/humans.py does).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import duckdb


def insert_human(cur: duckdb.DuckDBPyConnection, *, principal_id: str, human_email: str,
                 human_id: str, set_by: str, now: dt.datetime) -> None:
    """Give a principal its human identity (once)."""
    cur.execute("INSERT INTO principal_human (principal_id, human_email, human_id, set_by, set_at) "
                "VALUES (?, ?, ?, ?, ?)", [principal_id, human_email, human_id, set_by, now])


def humans_of(cur: duckdb.DuckDBPyConnection, principal_ids: Sequence[str]) -> dict[str, str]:
    """principal id -> human id, for those of the principals that have one (revoked too)."""
    if not principal_ids:
        return {}
    rows = cur.execute("SELECT principal_id, human_id FROM principal_human "
                       "WHERE principal_id IN (SELECT unnest(?::VARCHAR[]))",
                       [list(principal_ids)]).fetchall()
    return {str(p): str(h) for p, h in rows}


def active_holders(cur: duckdb.DuckDBPyConnection, human_id: str) -> list[str]:
    """The unrevoked principals that carry this human identity."""
    rows = cur.execute("SELECT h.principal_id FROM principal_human h JOIN principal p "
                       "ON p.principal_id = h.principal_id WHERE h.human_id = ? "
                       "AND p.revoked_at IS NULL ORDER BY h.principal_id", [human_id]).fetchall()
    return [str(r[0]) for r in rows]
