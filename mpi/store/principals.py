"""SQL for agencies, principals, their API keys (hashes only) and idempotency keys.

Owns: reading and writing the ``agency``, ``agency_key_scope``, ``principal``, ``api_key`` and
``idempotency_key`` tables. Must not: see a plaintext API key (callers pass SHA-256 hashes) or
decide who may do what (mpi/principals.py and api/ do).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import duckdb

from mpi.store.rows import dict_rows, first_row

_PRINCIPAL_COLS = ("p.principal_id, p.name, p.role, p.agency, p.created_at, p.revoked_at, "
                   "(SELECT k.key_prefix FROM api_key k WHERE k.principal_id = p.principal_id "
                   "AND k.revoked_at IS NULL ORDER BY k.created_at DESC LIMIT 1) AS key_prefix, "
                   "(SELECT h.human_email FROM principal_human h "
                   "WHERE h.principal_id = p.principal_id) AS human_email")


def insert_agency(cur: duckdb.DuckDBPyConnection, agency: str, *, now: dt.datetime) -> bool:
    """Register an agency; False when it already exists."""
    rows = cur.execute("INSERT INTO agency VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING agency",
                       [agency, now]).fetchall()
    return bool(rows)


def list_agencies(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every agency, by name, with its key scope (``shared`` unless set)."""
    return dict_rows(cur.execute(
        "SELECT a.agency, a.created_at, coalesce(s.key_scope, 'shared') AS key_scope "
        "FROM agency a LEFT JOIN agency_key_scope s ON s.agency = a.agency ORDER BY a.agency"))


def set_key_scope(cur: duckdb.DuckDBPyConnection, agency: str, key_scope: str, *,
                  now: dt.datetime) -> None:
    """Set an agency's key scope."""
    cur.execute("INSERT INTO agency_key_scope VALUES (?, ?, ?) ON CONFLICT (agency) DO UPDATE "
                "SET key_scope = excluded.key_scope, updated_at = excluded.updated_at",
                [agency, key_scope, now])


def key_scopes(cur: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """agency -> key scope, for the agencies whose scope was set."""
    return {str(a): str(s) for a, s in cur.execute(
        "SELECT agency, key_scope FROM agency_key_scope").fetchall()}


def agency_exists(cur: duckdb.DuckDBPyConnection, agency: str) -> bool:
    """Whether the agency is registered."""
    return first_row(cur.execute("SELECT 1 FROM agency WHERE agency = ?", [agency]).fetchall()) \
        is not None


def insert_principal(cur: duckdb.DuckDBPyConnection, *, principal_id: str, name: str, role: str,
                     agency: str | None, now: dt.datetime) -> None:
    """Insert a principal (no key yet)."""
    cur.execute("INSERT INTO principal VALUES (?, ?, ?, ?, ?, NULL)",
                [principal_id, name, role, agency, now])


def insert_api_key(cur: duckdb.DuckDBPyConnection, *, key_hash: str, principal_id: str,
                   key_prefix: str, now: dt.datetime) -> None:
    """Store a new key's hash for a principal."""
    cur.execute("INSERT INTO api_key VALUES (?, ?, ?, ?, NULL)",
                [key_hash, principal_id, key_prefix, now])


def revoke_keys(cur: duckdb.DuckDBPyConnection, principal_id: str, *, now: dt.datetime) -> None:
    """Revoke every live key of a principal."""
    cur.execute("UPDATE api_key SET revoked_at = ? WHERE principal_id = ? AND revoked_at IS NULL",
                [now, principal_id])


def revoke_principal(cur: duckdb.DuckDBPyConnection, principal_id: str, *,
                     now: dt.datetime) -> None:
    """Mark a principal revoked (its keys too)."""
    cur.execute("UPDATE principal SET revoked_at = ? WHERE principal_id = ? AND revoked_at IS NULL",
                [now, principal_id])
    revoke_keys(cur, principal_id, now=now)


def find_principal(cur: duckdb.DuckDBPyConnection, principal_id: str) -> dict[str, Any] | None:
    """One principal with its live key prefix, or None."""
    rows = dict_rows(cur.execute(f"SELECT {_PRINCIPAL_COLS} FROM principal p WHERE p.principal_id = ?",
                              [principal_id]))
    return rows[0] if rows else None


def list_principals(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every principal (revoked ones too), oldest first."""
    return dict_rows(cur.execute(f"SELECT {_PRINCIPAL_COLS} FROM principal p "
                              "ORDER BY p.created_at, p.principal_id"))


def find_by_key_hash(cur: duckdb.DuckDBPyConnection, key_hash: str) -> dict[str, Any] | None:
    """The principal a key hash belongs to, with ``key_revoked`` (key or principal revoked)."""
    rows = dict_rows(cur.execute(
        "SELECT p.principal_id, p.name, p.role, p.agency, "
        "(k.revoked_at IS NOT NULL OR p.revoked_at IS NOT NULL) AS key_revoked "
        "FROM api_key k JOIN principal p ON p.principal_id = k.principal_id "
        "WHERE k.key_hash = ?", [key_hash]))
    return rows[0] if rows else None


def count_principals(cur: duckdb.DuckDBPyConnection, *, role: str, active_only: bool) -> int:
    """How many principals hold ``role`` (only unrevoked ones when ``active_only``)."""
    sql = "SELECT count(*) FROM principal WHERE role = ?"
    if active_only:
        sql += " AND revoked_at IS NULL"
    row = first_row(cur.execute(sql, [role]).fetchall())
    return int(row[0]) if row else 0


def find_idempotent_response(cur: duckdb.DuckDBPyConnection, *, principal_id: str,
                             idempotency_key: str, since: dt.datetime) -> tuple[str, str] | None:
    """(request_hash, stored response JSON) for a principal's idempotency key stored at or
    after ``since`` (older ones have expired), or None."""
    row = first_row(cur.execute(
        "SELECT request_hash, response FROM idempotency_key WHERE principal_id = ? "
        "AND idempotency_key = ? AND created_at >= ?",
        [principal_id, idempotency_key, since]).fetchall())
    return (str(row[0]), str(row[1])) if row else None


def insert_idempotent_response(cur: duckdb.DuckDBPyConnection, *, principal_id: str,
                               idempotency_key: str, request_hash: str, response: str,
                               now: dt.datetime, expired_before: dt.datetime) -> None:
    """Remember the response given for a principal's idempotency key (replacing an expired
    one stored before ``expired_before``; a live one is kept)."""
    cur.execute("INSERT INTO idempotency_key VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (principal_id, idempotency_key) DO UPDATE SET "
                "request_hash = excluded.request_hash, response = excluded.response, "
                "created_at = excluded.created_at WHERE idempotency_key.created_at < ?",
                [principal_id, idempotency_key, request_hash, response, now, expired_before])


def purge_idempotent_responses(cur: duckdb.DuckDBPyConnection, *, before: dt.datetime) -> int:
    """Forget responses stored before ``before``; returns how many."""
    row = first_row(cur.execute("DELETE FROM idempotency_key WHERE created_at < ?",
                                [before]).fetchall())
    return int(row[0]) if row else 0
