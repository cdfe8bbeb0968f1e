"""SQL for agency verification tasks (a steward asks the agencies holding a pair's records).

Owns: the ``verification_task`` table (migration 9): inserting the tasks of one request,
listing an agency's tasks, listing an item's tasks, reading one and recording an answer.
Must not: decide who may see or answer a task (mpi/steward/verification.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import duckdb

from mpi.store.rows import dict_rows, first_row

_COLUMNS = ("task_seq", "item_seq", "agency", "record_seq", "other_record_seq", "question",
            "status", "answer", "answer_note", "created_by", "created_at", "answered_by",
            "answered_at")
_COLS = ", ".join(f"t.{c}" for c in _COLUMNS)


def insert_tasks(cur: duckdb.DuckDBPyConnection, tasks: Sequence[dict[str, Any]]) -> list[int]:
    """Insert tasks (each without ``task_seq``: numbered after the highest) and return their
    ids. The caller holds the registry's write lock."""
    row = first_row(cur.execute(
        "SELECT COALESCE(MAX(task_seq), 0) FROM verification_task").fetchall())
    nxt = int(row[0]) if row else 0
    ids = []
    for t in tasks:
        nxt += 1
        cur.execute(
            "INSERT INTO verification_task (task_seq, item_seq, agency, record_seq, "
            "other_record_seq, question, status, created_by, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, 'open', ?, ?)",
            [nxt, t["item_seq"], t["agency"], t["record_seq"], t.get("other_record_seq"),
             t["question"], t["created_by"], t["created_at"]])
        ids.append(nxt)
    return ids


def tasks_of_item(cur: duckdb.DuckDBPyConnection, item_seq: int) -> list[dict[str, Any]]:
    """Every task of a review item, by id."""
    return dict_rows(cur.execute(f"SELECT {_COLS} FROM verification_task t "
                                 "WHERE t.item_seq = ? ORDER BY t.task_seq", [item_seq]))


def tasks_of_agency(cur: duckdb.DuckDBPyConnection, agency: str, *, status: str | None,
                    after: int = 0, limit: int = 50) -> list[dict[str, Any]]:
    """A page of one agency's tasks (task_seq > ``after``), with its records' source ids."""
    where = ["t.agency = ?", "t.task_seq > ?"]
    params: list[Any] = [agency, after]
    if status is not None:
        where.append("t.status = ?")
        params.append(status)
    return dict_rows(cur.execute(
        f"SELECT {_COLS}, s.source_record_id, o.source_record_id AS other_source_record_id "
        "FROM verification_task t JOIN source_record s ON s.record_seq = t.record_seq "
        "LEFT JOIN source_record o ON o.record_seq = t.other_record_seq "
        f"WHERE {' AND '.join(where)} ORDER BY t.task_seq LIMIT ?", [*params, int(limit)]))


def find_task(cur: duckdb.DuckDBPyConnection, task_seq: int) -> dict[str, Any] | None:
    """One task, or None."""
    rows = dict_rows(cur.execute(f"SELECT {_COLS} FROM verification_task t "
                                 "WHERE t.task_seq = ?", [task_seq]))
    return rows[0] if rows else None


def answer_task(cur: duckdb.DuckDBPyConnection, task_seq: int, *, answer: str,
                note: str | None, principal_id: str, now: dt.datetime) -> None:
    """Record an agency's answer on its task."""
    cur.execute("UPDATE verification_task SET status = 'answered', answer = ?, answer_note = ?, "
                "answered_by = ?, answered_at = ? WHERE task_seq = ?",
                [answer, note, principal_id, now, task_seq])
