"""SQL for background jobs (bulk uploads): their state, progress, counts and per-row errors.

Owns: the ``job`` table. Counts and errors are stored as JSON text. Must not: run jobs
(mpi/jobs.py does).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import duckdb

JOB_COLUMNS = ("job_id", "principal_id", "agency", "kind", "state", "total", "done", "counts",
               "errors", "created_at", "updated_at", "message", "result")


def insert_job(cur: duckdb.DuckDBPyConnection, *, job_id: str, principal_id: str,
               agency: str | None, kind: str, total: int | None, now: dt.datetime) -> None:
    """Insert a queued job."""
    cur.execute("INSERT INTO job (job_id, principal_id, agency, kind, state, total, done, counts, "
                "errors, created_at, updated_at) VALUES (?, ?, ?, ?, 'queued', ?, 0, '{}', '[]', ?, ?)",
                [job_id, principal_id, agency, kind, total, now, now])


def update_job(cur: duckdb.DuckDBPyConnection, job_id: str, *, state: str, done: int,
               counts: str, errors: str, now: dt.datetime) -> None:
    """Record a job's state and progress."""
    cur.execute("UPDATE job SET state = ?, done = ?, counts = ?, errors = ?, updated_at = ? "
                "WHERE job_id = ?", [state, done, counts, errors, now, job_id])


def find_job(cur: duckdb.DuckDBPyConnection, job_id: str) -> dict[str, Any] | None:
    """One job, or None."""
    rel = cur.execute("SELECT " + ", ".join(JOB_COLUMNS) + " FROM job WHERE job_id = ?", [job_id])
    rows = rel.fetchall()
    return dict(zip(JOB_COLUMNS, rows[0], strict=True)) if rows else None


def interrupt_unfinished_jobs(cur: duckdb.DuckDBPyConnection, *, now: dt.datetime) -> int:
    """Mark jobs left queued or running by a previous process as interrupted; how many."""
    rows = cur.execute("UPDATE job SET state = 'interrupted', updated_at = ? "
                       "WHERE state IN ('queued', 'running') RETURNING job_id", [now]).fetchall()
    return len(rows)


def update_job_message(cur: duckdb.DuckDBPyConnection, job_id: str, *, message: str | None,
                       result: str | None, now: dt.datetime) -> None:
    """Record a job's latest progress message and (JSON) result."""
    cur.execute("UPDATE job SET message = ?, result = ?, updated_at = ? WHERE job_id = ?",
                [message, result, now, job_id])
