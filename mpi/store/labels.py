"""SQL for steward labels: pairs of source records judged the same person or not.

Owns: the ``label`` table. A label names two records by ``record_seq`` (stored with
``record_seq_a < record_seq_b``); ``source`` says where it came from (``review``, ``import``,
``merge``, ``split``). Revoked labels stay for the record but are not "active". When the same
pair has several active labels, the newest one wins. Must not: decide what a label means for
linkage (constraints) or score anything.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from mpi.store.records import write_rows
from mpi.store.rows import first_row

LABEL_SCHEMA = pa.schema([
    ("label_seq", pa.int64()), ("record_seq_a", pa.int64()), ("record_seq_b", pa.int64()),
    ("is_match", pa.bool_()), ("source", pa.string()), ("reason", pa.string()),
    ("principal_id", pa.string()), ("created_at", pa.timestamp("us")),
    ("revoked_at", pa.timestamp("us"))])


ACTIVE_LABELS_SQL = (
    "SELECT record_seq_a, record_seq_b, is_match FROM ("
    "  SELECT *, row_number() OVER (PARTITION BY record_seq_a, record_seq_b"
    "                               ORDER BY label_seq DESC) AS rn"
    "  FROM label WHERE revoked_at IS NULL) WHERE rn = 1")
"""The newest unrevoked label per pair, as a subquery other store modules can build on."""


def next_label_seq(cur: duckdb.DuckDBPyConnection) -> int:
    """The next free label number."""
    row = first_row(cur.execute("SELECT coalesce(max(label_seq), 0) FROM label").fetchall())
    return int(row[0]) + 1


def insert_labels(cur: duckdb.DuckDBPyConnection, labels: Sequence[Mapping[str, Any]], *,
                  principal_id: str, source: str, now: dt.datetime) -> list[int]:
    """Append labels (each with record_seq_a, record_seq_b, is_match, optional reason).

    The pair is stored in ascending order; returns the new label numbers.
    """
    start = next_label_seq(cur)
    rows = []
    for i, label_row in enumerate(labels):
        a, b = sorted((int(label_row["record_seq_a"]), int(label_row["record_seq_b"])))
        rows.append({"label_seq": start + i, "record_seq_a": a, "record_seq_b": b,
                     "is_match": bool(label_row["is_match"]), "source": source,
                     "reason": label_row.get("reason"), "principal_id": principal_id,
                     "created_at": now, "revoked_at": None})
    write_rows(cur, "label", LABEL_SCHEMA, rows)
    return list(range(start, start + len(rows)))


def active_labels(cur: duckdb.DuckDBPyConnection) -> pa.Table:
    """The newest unrevoked label per record pair: record_seq_a, record_seq_b, is_match."""
    return cur.sql(ACTIVE_LABELS_SQL + " ORDER BY record_seq_a, record_seq_b").to_arrow_table()


def count_labels(cur: duckdb.DuckDBPyConnection) -> int:
    """How many active labelled pairs there are."""
    row = first_row(cur.execute(
        "SELECT count(*) FROM (SELECT DISTINCT record_seq_a, record_seq_b FROM label "
        "WHERE revoked_at IS NULL)").fetchall())
    return int(row[0])


def revoke_label(cur: duckdb.DuckDBPyConnection, label_seq: int, *, now: dt.datetime) -> None:
    """Mark a label revoked (it no longer counts for evaluation or training)."""
    cur.execute("UPDATE label SET revoked_at = ? WHERE label_seq = ? AND revoked_at IS NULL",
                [now, label_seq])
