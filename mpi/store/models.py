"""SQL for the model lifecycle: activation history, stored evaluations, churn of a promotion.

Owns: the ``model_evaluation`` table and the read-only queries the model use cases need over
``model_activation``, ``key_event`` and ``source_record``. Must not: decide anything about
models (mpi/modelops.py does) or write ``model_activation`` (mpi/store/persons.py does).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa

from mpi.store.rows import first_row


def activations(cur: duckdb.DuckDBPyConnection) -> list[tuple[str, dt.datetime]]:
    """Every activation (model_version, activated_at), oldest first."""
    rows = cur.execute("SELECT model_version, activated_at FROM model_activation "
                       "ORDER BY activated_at, rowid").fetchall()
    return [(str(v), t) for v, t in rows]


def insert_evaluation(cur: duckdb.DuckDBPyConnection, *, model_version: str, principal_id: str,
                      label_count: int, result: dict[str, Any], now: dt.datetime) -> int:
    """Store one evaluation of a model version; returns its number."""
    row = first_row(cur.execute("SELECT coalesce(max(evaluation_seq), 0) + 1 "
                                "FROM model_evaluation").fetchall())
    seq = int(row[0])
    cur.execute("INSERT INTO model_evaluation (evaluation_seq, model_version, principal_id, "
                "label_count, result, evaluated_at) VALUES (?, ?, ?, ?, ?, ?)",
                [seq, model_version, principal_id, label_count, json.dumps(result), now])
    return seq


def latest_evaluation(cur: duckdb.DuckDBPyConnection, model_version: str) -> dict[str, Any] | None:
    """The newest stored evaluation of a version (with evaluated_at), or None."""
    row = first_row(cur.execute(
        "SELECT evaluation_seq, result, evaluated_at FROM model_evaluation "
        "WHERE model_version = ? ORDER BY evaluation_seq DESC LIMIT 1", [model_version]).fetchall())
    if row is None:
        return None
    out: dict[str, Any] = json.loads(row[1])
    out.update(evaluation_seq=int(row[0]), evaluated_at=row[2])
    return out


def key_events_since(cur: duckdb.DuckDBPyConnection, after_event_seq: int) -> tuple[int, int]:
    """(events, distinct keys) among key events numbered above ``after_event_seq``."""
    row = first_row(cur.execute(
        "SELECT count(*), count(DISTINCT person_key) FROM key_event WHERE event_seq > ?",
        [after_event_seq]).fetchall())
    return (int(row[0]), int(row[1])) if row else (0, 0)


def record_refs(cur: duckdb.DuckDBPyConnection,
                record_seqs: Sequence[int]) -> dict[int, tuple[str, str]]:
    """(agency, source_record_id) of the given record_seqs."""
    if not record_seqs:
        return {}
    seqs = pa.table({"record_seq": pa.array(sorted(set(record_seqs)), pa.int64())})
    cur.register("mpi_ref_seqs", seqs)
    try:
        rows = cur.execute("SELECT s.record_seq, s.agency, s.source_record_id FROM source_record s "
                           "JOIN mpi_ref_seqs q ON q.record_seq = s.record_seq").fetchall()
    finally:
        cur.unregister("mpi_ref_seqs")
    return {int(s): (str(a), str(r)) for s, a, r in rows}
