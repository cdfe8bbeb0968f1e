"""SQL for stewards' non-identifying sign-offs of dictionary attributes (Decision 94).

Owns: the ``attribute_sign_off`` table of migration 15: one row per signed-off attribute
(agency, dataset, name) with the type and class it was signed off under, the steward principal,
its human identity, the reason and the time. Must not: decide who may sign off what
(mpi/extract/signoff.py does) or change a dictionary entry (mpi/store/extracts.py does).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import duckdb

from mpi.store.rows import first_row

COLUMNS = ("agency", "dataset", "name", "type", "klass", "signed_by", "signed_by_human",
           "reason", "signed_at")


def find_sign_off(cur: duckdb.DuckDBPyConnection, *, agency: str, dataset: str,
                  name: str) -> dict[str, Any] | None:
    """The sign-off of one attribute, or None."""
    row = first_row(cur.execute(f"SELECT {', '.join(COLUMNS)} FROM attribute_sign_off "
                                "WHERE agency = ? AND dataset = ? AND name = ?",
                                [agency, dataset, name]).fetchall())
    return None if row is None else dict(zip(COLUMNS, row, strict=True))


def list_sign_offs(cur: duckdb.DuckDBPyConnection, *, agency: str,
                   dataset: str) -> list[dict[str, Any]]:
    """The sign-offs of one dataset's attributes, by name."""
    rows = cur.execute(f"SELECT {', '.join(COLUMNS)} FROM attribute_sign_off WHERE agency = ? "
                       "AND dataset = ? ORDER BY name", [agency, dataset]).fetchall()
    return [dict(zip(COLUMNS, r, strict=True)) for r in rows]


def put_sign_off(cur: duckdb.DuckDBPyConnection, *, agency: str, dataset: str, name: str,
                 type_: str, klass: str, signed_by: str, signed_by_human: str, reason: str,
                 now: dt.datetime) -> None:
    """Record (or replace) a steward's sign-off of one attribute."""
    delete_sign_off(cur, agency=agency, dataset=dataset, name=name)
    cur.execute(f"INSERT INTO attribute_sign_off ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(COLUMNS))})",
                [agency, dataset, name, type_, klass, signed_by, signed_by_human, reason, now])


def delete_sign_off(cur: duckdb.DuckDBPyConnection, *, agency: str, dataset: str,
                    name: str) -> int:
    """Remove one attribute's sign-off; how many rows went (0 or 1)."""
    found = cur.execute("SELECT count(*) FROM attribute_sign_off WHERE agency = ? AND "
                        "dataset = ? AND name = ?", [agency, dataset, name]).fetchone()
    cur.execute("DELETE FROM attribute_sign_off WHERE agency = ? AND dataset = ? AND name = ?",
                [agency, dataset, name])
    return int(found[0]) if found else 0


def drop_stale(cur: duckdb.DuckDBPyConnection, *, agency: str, dataset: str) -> list[str]:
    """After a dictionary is replaced: remove the sign-offs whose attribute is gone or whose
    type or class changed; returns their attribute names."""
    rows = cur.execute(
        "SELECT s.name FROM attribute_sign_off s WHERE s.agency = ? AND s.dataset = ? AND NOT "
        "EXISTS (SELECT 1 FROM dataset_attribute a WHERE a.agency = s.agency AND a.dataset = "
        "s.dataset AND a.name = s.name AND a.type = s.type AND a.klass = s.klass) ORDER BY s.name",
        [agency, dataset]).fetchall()
    names = [str(r[0]) for r in rows]
    for name in names:
        delete_sign_off(cur, agency=agency, dataset=dataset, name=name)
    return names
