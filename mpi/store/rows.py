"""Small helpers for reading query results (shared by every table store).

Owns: turning fetched DuckDB rows into Python values. Must not: import the other store modules
(they import this, and ``db`` imports them through ``writeset``).
"""

from __future__ import annotations

from typing import Any

import duckdb


def first_row(rows: list[Any]) -> Any:
    """First row of a fully fetched result, or None."""
    return rows[0] if rows else None


def dict_rows(rel: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every row of an executed query as a dict keyed by column name."""
    names = [d[0] for d in rel.description]
    return [dict(zip(names, r, strict=True)) for r in rel.fetchall()]
