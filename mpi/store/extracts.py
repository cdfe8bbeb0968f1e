"""SQL for research extracts: data dictionaries, requests, approvals, builds and disclosures.

Owns: the tables of migration 5 (``dataset``, ``dataset_attribute``, ``extract_request``,
``extract_approval``, ``extract_build``, ``extract_person``) and the lineage the
accounting of disclosures needs. JSON-valued columns are stored as text. Must not: decide who
may do what (mpi/extract/workflow.py does) or read record attributes for a build
(mpi/store/extracts_read.py does).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from mpi.store import signoffs
from mpi.store.records import append_rows
from mpi.store.rows import first_row

ATTRIBUTE_COLUMNS = ("agency", "dataset", "name", "type", "description", "klass",
                     "allowed_generalizations", "default_generalization",
                     "non_identifying_signed_off_by", "hierarchy")
REQUEST_COLUMNS = ("extract_id", "requester_id", "title", "purpose", "agreement_ref", "kind",
                   "spec", "agencies", "status", "expires_at", "download_limit", "downloads",
                   "build_state", "build_error", "created_at", "decided_at", "approved_at",
                   "delivered_at", "closed_at", "risk_report")
_UPDATABLE = frozenset(REQUEST_COLUMNS) - {"extract_id", "requester_id", "created_at"}
APPROVAL_COLUMNS = ("extract_id", "principal_id", "capacity", "decision", "reason", "decided_at")
BUILD_COLUMNS = ("extract_id", "build_seq", "built_at", "rows", "persons", "manifest_sha256",
                 "first_delivered_at")
_PERSON_SCHEMA = pa.schema([("extract_id", pa.string()), ("build_seq", pa.int32()),
                            ("person_key", pa.string())])


def _dicts(columns: Sequence[str], rows: list[Any]) -> list[dict[str, Any]]:
    return [dict(zip(columns, r, strict=True)) for r in rows]


# ---- data dictionaries ----------------------------------------------------------------------
def replace_dataset(cur: duckdb.DuckDBPyConnection, *, agency: str, dataset: str,
                    description: str | None, attributes: Sequence[Mapping[str, Any]],
                    principal_id: str, now: dt.datetime) -> list[str]:
    """Replace an agency's dataset dictionary (its row and all its attribute entries); a
    steward's sign-off stays unless its attribute is gone or changed type or class (returns
    the names whose sign-off went)."""
    cur.execute("DELETE FROM dataset_attribute WHERE agency = ? AND dataset = ?", [agency, dataset])
    cur.execute("DELETE FROM dataset WHERE agency = ? AND dataset = ?", [agency, dataset])
    cur.execute("INSERT INTO dataset VALUES (?, ?, ?, ?, ?)",
                [agency, dataset, description, principal_id, now])
    if attributes:
        marks = ", ".join("?" * len(ATTRIBUTE_COLUMNS))
        cur.executemany(f"INSERT INTO dataset_attribute ({', '.join(ATTRIBUTE_COLUMNS)}) "
                        f"VALUES ({marks})",
                        [[agency, dataset] + [None if c == "non_identifying_signed_off_by"
                                              else a.get(c) for c in ATTRIBUTE_COLUMNS[2:]]
                         for a in attributes])
    return signoffs.drop_stale(cur, agency=agency, dataset=dataset)


def list_datasets(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every dataset (agency, dataset, description, updated_by, updated_at), ordered."""
    rows = cur.execute("SELECT agency, dataset, description, updated_by, updated_at FROM dataset "
                       "ORDER BY agency, dataset").fetchall()
    return _dicts(("agency", "dataset", "description", "updated_by", "updated_at"), rows)


def list_dataset_attributes(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every dictionary entry, ordered by agency, dataset and name."""
    # the sign-off is the steward's own record (mpi/store/signoffs.py, Decision 94), honoured
    # only for an `other` entry of the type and class it was signed off under
    cols = [f"a.{c}" for c in ATTRIBUTE_COLUMNS]
    cols[ATTRIBUTE_COLUMNS.index("non_identifying_signed_off_by")] = "s.signed_by"
    rows = cur.execute(
        f"SELECT {', '.join(cols)}, s.signed_at, s.reason FROM dataset_attribute a "
        "LEFT JOIN attribute_sign_off s ON s.agency = a.agency AND s.dataset = a.dataset "
        "AND s.name = a.name AND s.type = a.type AND s.klass = a.klass AND a.klass = 'other' "
        "ORDER BY a.agency, a.dataset, a.name").fetchall()
    return _dicts((*ATTRIBUTE_COLUMNS, "signed_off_at", "sign_off_reason"), rows)


# ---- requests and approvals -----------------------------------------------------------------
def insert_request(cur: duckdb.DuckDBPyConnection, row: Mapping[str, Any]) -> None:
    """Insert a new extract request (every column of REQUEST_COLUMNS)."""
    marks = ", ".join("?" * len(REQUEST_COLUMNS))
    cur.execute(f"INSERT INTO extract_request ({', '.join(REQUEST_COLUMNS)}) VALUES ({marks})",
                [row.get(c) for c in REQUEST_COLUMNS])


def find_request(cur: duckdb.DuckDBPyConnection, extract_id: str) -> dict[str, Any] | None:
    """One extract request, or None."""
    rows = cur.execute(f"SELECT {', '.join(REQUEST_COLUMNS)} FROM extract_request "
                       "WHERE extract_id = ?", [extract_id]).fetchall()
    found = _dicts(REQUEST_COLUMNS, rows)
    return found[0] if found else None


def list_requests(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every extract request, newest first."""
    rows = cur.execute(f"SELECT {', '.join(REQUEST_COLUMNS)} FROM extract_request "
                       "ORDER BY created_at DESC, extract_id").fetchall()
    return _dicts(REQUEST_COLUMNS, rows)


def update_request(cur: duckdb.DuckDBPyConnection, extract_id: str, **fields: Any) -> None:
    """Set some columns of one request (column names from REQUEST_COLUMNS only)."""
    bad = set(fields) - _UPDATABLE
    if bad or not fields:
        raise ValueError(f"not updatable: {sorted(bad)}")
    names = sorted(fields)
    cur.execute(f"UPDATE extract_request SET {', '.join(f'{n} = ?' for n in names)} "
                "WHERE extract_id = ?", [fields[n] for n in names] + [extract_id])


def insert_approval(cur: duckdb.DuckDBPyConnection, row: Mapping[str, Any]) -> None:
    """Record one approval or denial."""
    cur.execute(f"INSERT INTO extract_approval ({', '.join(APPROVAL_COLUMNS)}) VALUES "
                "(?, ?, ?, ?, ?, ?)", [row[c] for c in APPROVAL_COLUMNS])


def list_approvals(cur: duckdb.DuckDBPyConnection, extract_id: str) -> list[dict[str, Any]]:
    """A request's decisions, oldest first."""
    rows = cur.execute(f"SELECT {', '.join(APPROVAL_COLUMNS)} FROM extract_approval "
                       "WHERE extract_id = ? ORDER BY decided_at, principal_id",
                       [extract_id]).fetchall()
    return _dicts(APPROVAL_COLUMNS, rows)


# ---- builds and disclosures -----------------------------------------------------------------
def next_build_seq(cur: duckdb.DuckDBPyConnection, extract_id: str) -> int:
    """The number the next build of this extract gets (1, 2, ...)."""
    row = first_row(cur.execute("SELECT coalesce(max(build_seq), 0) FROM extract_build "
                                "WHERE extract_id = ?", [extract_id]).fetchall())
    return int(row[0]) + 1


def insert_build(cur: duckdb.DuckDBPyConnection, *, extract_id: str, build_seq: int,
                 built_at: dt.datetime, rows: int, manifest_sha256: str,
                 person_keys: Sequence[str]) -> None:
    """Record a build and the persons it included (not yet disclosed until delivered)."""
    cur.execute(f"INSERT INTO extract_build ({', '.join(BUILD_COLUMNS)}) VALUES "
                "(?, ?, ?, ?, ?, ?, NULL)",
                [extract_id, build_seq, built_at, rows, len(person_keys), manifest_sha256])
    if person_keys:
        table = pa.table({"extract_id": pa.array([extract_id] * len(person_keys), pa.string()),
                          "build_seq": pa.array([build_seq] * len(person_keys), pa.int32()),
                          "person_key": pa.array(list(person_keys), pa.string())},
                         schema=_PERSON_SCHEMA)
        append_rows(cur, "extract_person", _PERSON_SCHEMA.names, table)


def latest_build(cur: duckdb.DuckDBPyConnection, extract_id: str) -> dict[str, Any] | None:
    """The newest build of an extract, or None."""
    rows = cur.execute(f"SELECT {', '.join(BUILD_COLUMNS)} FROM extract_build WHERE extract_id = ? "
                       "ORDER BY build_seq DESC LIMIT 1", [extract_id]).fetchall()
    found = _dicts(BUILD_COLUMNS, rows)
    return found[0] if found else None


def mark_build_delivered(cur: duckdb.DuckDBPyConnection, *, extract_id: str, build_seq: int,
                         now: dt.datetime) -> None:
    """Note the first delivery of a build (later deliveries keep the first time)."""
    cur.execute("UPDATE extract_build SET first_delivered_at = coalesce(first_delivered_at, ?) "
                "WHERE extract_id = ? AND build_seq = ?", [now, extract_id, build_seq])


def lineage_into(cur: duckdb.DuckDBPyConnection,
                 person_keys: Sequence[str]) -> list[tuple[str, str, dt.datetime | None]]:
    """Every lineage edge leading, over any number of steps, into one of the keys:
    (from_key, to_key, when its key event happened; None when no event row is found)."""
    if not person_keys:
        return []
    edges = cur.execute(
        "WITH RECURSIVE back(k) AS (SELECT unnest(?::VARCHAR[]) UNION SELECT l.from_key "
        "FROM key_lineage l JOIN back b ON l.to_key = b.k) "
        "SELECT DISTINCT l.from_key, l.to_key, l.event_seq FROM key_lineage l "
        "JOIN back b ON l.to_key = b.k", [list(person_keys)]).fetchall()
    if not edges:  # most persons: no lineage, and no scan of the key events
        return []
    at = dict(cur.execute("SELECT event_seq, min(occurred_at) FROM key_change WHERE event_seq IN "
                          "(SELECT unnest(?::BIGINT[])) GROUP BY event_seq",
                          [sorted({int(e) for _f, _t, e in edges})]).fetchall())
    return sorted(((str(f), str(t), at.get(e)) for f, t, e in edges),
                  key=lambda x: (x[2] is None, x[2] or dt.datetime.min, x[0], x[1]))


def delivered_builds(cur: duckdb.DuckDBPyConnection,
                     person_keys: Sequence[str]) -> list[dict[str, Any]]:
    """Delivered builds that included any of the keys: extract, build, the key, built and first
    delivered times."""
    if not person_keys:
        return []
    rows = cur.execute(
        "SELECT b.extract_id, b.build_seq, p.person_key, b.built_at, b.first_delivered_at "
        "FROM extract_person p JOIN extract_build b ON b.extract_id = p.extract_id "
        "AND b.build_seq = p.build_seq WHERE p.person_key IN (SELECT unnest(?::VARCHAR[])) "
        "AND b.first_delivered_at IS NOT NULL ORDER BY 5, 1, 2, 3", [list(person_keys)]).fetchall()
    return _dicts(("extract_id", "build_seq", "person_key", "built_at", "first_delivered_at"), rows)


def has_key_records_at(cur: duckdb.DuckDBPyConnection, person_keys: Sequence[str], *,
                       agency: str) -> bool:
    """Whether any of the keys has an active record at the agency."""
    if not person_keys:
        return False
    row = first_row(cur.execute(
        "SELECT count(*) FROM source_record WHERE agency = ? AND status = 'active' "
        "AND person_key IN (SELECT unnest(?))", [agency, list(person_keys)]).fetchall())
    return bool(row and row[0])


def request_times(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """created_at, decided_at, approved_at, delivered_at and status of every request."""
    rows = cur.execute("SELECT extract_id, status, created_at, decided_at, approved_at, "
                       "delivered_at FROM extract_request ORDER BY created_at").fetchall()
    return _dicts(("extract_id", "status", "created_at", "decided_at", "approved_at",
                   "delivered_at"), rows)
