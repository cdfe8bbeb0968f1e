"""SQL for the review queue and the record lookups stewards' use cases need.

Owns: listing review items with filters and paging, reading one item, recording a decision on
it, and resolving records by ``record_seq`` or by (agency, source_record_id). The items
themselves are written by the online path (mpi/store/persons.py ``insert_review_items``).
Must not: score, explain or decide anything.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import duckdb

from mpi.store.rows import dict_rows

_ITEM_COLUMNS = ("item_seq", "kind", "record_seq", "person_key", "other_person_key",
                 "match_weight", "match_probability", "status", "model_version", "created_at",
                 "decision", "decision_reason", "decided_by", "decided_at", "current_weight",
                 "current_probability", "scored_model_version", "scored_at")
# The score an item has now: the last rescore's (after a promote or re-link), else as queued.
_CURRENT = "COALESCE(r.current_probability, r.match_probability)"
SORTS = ("id", "probability_desc", "probability_asc")
_IN_LIST = 1000  # records_by_seq: up to this many record_seqs as bound parameters
# Items involving an agency: its record (any status) is the item's record, or it has an active
# record on either side's person. Three equi-joins from the items (hash tables of the items'
# keys, one scan of source_record each): the correlated EXISTS with ORs this replaces took
# 97 s at 1M records and 42k items; this takes ~40 ms (Decision 92).
_AGENCY_INVOLVED = (
    "r.item_seq IN (SELECT i.item_seq FROM review_item i JOIN source_record s "
    "ON s.record_seq = i.record_seq WHERE s.agency = ? "
    "UNION ALL SELECT i.item_seq FROM review_item i JOIN source_record s "
    "ON s.person_key = i.person_key WHERE s.agency = ? AND s.status = 'active' "
    "UNION ALL SELECT i.item_seq FROM review_item i JOIN source_record s "
    "ON s.person_key = i.other_person_key WHERE s.agency = ? AND s.status = 'active')")


def list_review_items(cur: duckdb.DuckDBPyConnection, *, kind: str | None = None,
                      statuses: Sequence[str] = ("open",), agency: str | None = None,
                      min_probability: float | None = None, max_probability: float | None = None,
                      after: int = 0, limit: int = 50, sort: str = "id") -> list[dict[str, Any]]:
    """A page of review items matching every filter given, on current scores: by id
    (item_seq > ``after``, ascending), or by current probability (then ``after`` is the number
    of items to skip; ties by id)."""
    where = ["r.item_seq > ?"] if sort == "id" else ["TRUE"]
    params: list[Any] = [after] if sort == "id" else []
    if kind is not None:
        where.append("r.kind = ?")
        params.append(kind)
    if statuses:
        where.append("r.status IN (" + ", ".join("?" * len(statuses)) + ")")
        params.extend(statuses)
    if min_probability is not None:
        where.append(f"{_CURRENT} >= ?")
        params.append(min_probability)
    if max_probability is not None:
        where.append(f"{_CURRENT} <= ?")
        params.append(max_probability)
    if agency is not None:
        where.append(_AGENCY_INVOLVED)
        params.extend([agency] * 3)
    cols = ", ".join(f"r.{c}" for c in _ITEM_COLUMNS)
    if sort == "id":
        order, offset = "r.item_seq", 0
    else:
        direction = "DESC" if sort == "probability_desc" else "ASC"
        order, offset = f"{_CURRENT} {direction}, r.item_seq", int(after)
    return dict_rows(cur.execute(
        f"SELECT {cols} FROM review_item r WHERE {' AND '.join(where)} "
        f"ORDER BY {order} LIMIT ? OFFSET ?", [*params, int(limit), offset]))


def open_items(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every open or deferred item (what a rescore looks at), by id."""
    cols = ", ".join(_ITEM_COLUMNS)
    return dict_rows(cur.execute(f"SELECT {cols} FROM review_item "
                                 "WHERE status IN ('open', 'deferred') ORDER BY item_seq"))


def set_current_scores(cur: duckdb.DuckDBPyConnection, scores: Sequence[tuple[int, float, float]],
                       *, model_version: str, now: dt.datetime) -> None:
    """Store each item's current (item_seq, match weight, probability) under a model."""
    if not scores:
        return
    seqs, weights, probs = (list(col) for col in zip(*scores, strict=True))
    cur.execute(
        "UPDATE review_item SET current_weight = q.w, current_probability = q.p, "
        "scored_model_version = ?, scored_at = ? FROM (SELECT unnest(?::BIGINT[]) AS s, "
        "unnest(?::DOUBLE[]) AS w, unnest(?::DOUBLE[]) AS p) q WHERE review_item.item_seq = q.s",
        [model_version, now, seqs, weights, probs])


def resolve_items(cur: duckdb.DuckDBPyConnection, item_seqs: Sequence[int], *, reason: str,
                  now: dt.datetime) -> None:
    """Close open or deferred items with a cause (``decided_by`` 'system')."""
    if not item_seqs:
        return
    cur.execute("UPDATE review_item SET status = 'resolved', decision_reason = ?, "
                "decided_by = 'system', decided_at = ? WHERE status IN ('open', 'deferred') "
                "AND item_seq IN (SELECT unnest(?::BIGINT[]))",
                [reason, now, [int(s) for s in item_seqs]])


def reopen_review_item(cur: duckdb.DuckDBPyConnection, item_seq: int) -> None:
    """Open an item again: its decision fields are cleared (the audit log keeps them)."""
    cur.execute("UPDATE review_item SET status = 'open', decision = NULL, decision_reason = NULL, "
                "decided_by = NULL, decided_at = NULL WHERE item_seq = ?", [item_seq])


def find_review_item(cur: duckdb.DuckDBPyConnection, item_seq: int) -> dict[str, Any] | None:
    """One review item, or None."""
    cols = ", ".join(_ITEM_COLUMNS)
    rows = dict_rows(cur.execute(f"SELECT {cols} FROM review_item WHERE item_seq = ?", [item_seq]))
    return rows[0] if rows else None


def decide_review_item(cur: duckdb.DuckDBPyConnection, item_seq: int, *, status: str,
                       decision: str, reason: str, principal_id: str, now: dt.datetime) -> None:
    """Record a steward's decision on an item."""
    cur.execute("UPDATE review_item SET status = ?, decision = ?, decision_reason = ?, "
                "decided_by = ?, decided_at = ? WHERE item_seq = ?",
                [status, decision, reason, principal_id, now, item_seq])


_RESOLVE_SETTLED_SQL = """
UPDATE review_item SET status = 'resolved', decision_reason = ?,
       decided_by = 'system', decided_at = ?
WHERE status IN ('open', 'deferred') AND (
    (kind = 'possible_duplicate' AND person_key = other_person_key)
    OR (kind = 'record_person' AND EXISTS (
        SELECT 1 FROM source_record s WHERE s.record_seq = review_item.record_seq
        AND (s.status <> 'active' OR s.person_key = review_item.person_key)))
    OR EXISTS (
        SELECT 1 FROM person p WHERE p.status = 'retired'
        AND (p.person_key = review_item.person_key OR p.person_key = review_item.other_person_key)))
"""


def forward_duplicate_items(cur: duckdb.DuckDBPyConnection,
                            successors: Sequence[tuple[str, str]]) -> None:
    """Point open ``possible_duplicate`` items at the successor of a person a re-link retired
    (retired key -> surviving key): the question stays open for the records it was about,
    and is settled only once both sides are one person (resolve_settled_items)."""
    for old, new in successors:
        for col in ("person_key", "other_person_key"):
            cur.execute(f"UPDATE review_item SET {col} = ? WHERE {col} = ? "
                        "AND kind = 'possible_duplicate' AND status IN ('open', 'deferred')",
                        [new, old])


def resolve_settled_items(cur: duckdb.DuckDBPyConnection, *, now: dt.datetime,
                          reason: str = "settled by a re-link") -> int:
    """Close open/deferred items a re-link (or a steward's merge or split) settled: the record
    now belongs to the candidate person (or is no longer active), or a person the item names
    was retired. Returns how many."""
    row = cur.execute(_RESOLVE_SETTLED_SQL, [reason, now]).fetchone()
    return int(row[0]) if row else 0


def records_by_seq(cur: duckdb.DuckDBPyConnection,
                   record_seqs: Sequence[int]) -> dict[int, dict[str, Any]]:
    """record_seq -> agency, source_record_id, status, person_key, for the given records."""
    if not record_seqs:
        return {}
    seqs = sorted({int(s) for s in record_seqs})
    # A page's few records as a list of parameters: the scan filters on the list (~5 ms for
    # 75 records at 1M); a semi-join with unnest() is 3-4x slower. Many records: the join.
    where = ("record_seq IN (" + ", ".join("?" * len(seqs)) + ")" if len(seqs) <= _IN_LIST
             else "record_seq IN (SELECT unnest(?::BIGINT[]))")
    rows = dict_rows(cur.execute(
        "SELECT record_seq, agency, source_record_id, status, person_key FROM source_record "
        f"WHERE {where}", seqs if len(seqs) <= _IN_LIST else [seqs]))
    return {int(r["record_seq"]): r for r in rows}


def records_by_source_id(cur: duckdb.DuckDBPyConnection, refs: Sequence[tuple[str, str]]
                         ) -> dict[tuple[str, str], dict[str, Any]]:
    """(agency, source_record_id) -> record_seq, status, person_key, for the refs that exist."""
    if not refs:
        return {}
    agencies = [a for a, _s in refs]
    sids = [s for _a, s in refs]
    rows = dict_rows(cur.execute(
        "SELECT s.record_seq, s.agency, s.source_record_id, s.status, s.person_key "
        "FROM source_record s JOIN (SELECT unnest(?::VARCHAR[]) AS agency, "
        "unnest(?::VARCHAR[]) AS source_record_id) q "
        "ON s.agency = q.agency AND s.source_record_id = q.source_record_id",
        [agencies, sids]))
    return {(str(r["agency"]), str(r["source_record_id"])): r for r in rows}


def open_duplicate_pairs(cur: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    """(person_key, other_person_key) of every open or deferred ``possible_duplicate`` item:
    persons online matching kept apart for a steward."""
    rows = cur.execute(
        "SELECT person_key, other_person_key FROM review_item WHERE kind = 'possible_duplicate' "
        "AND status IN ('open', 'deferred') AND other_person_key IS NOT NULL "
        "ORDER BY item_seq").fetchall()
    return [(str(a), str(b)) for a, b in rows]


def open_duplicate_items_of(cur: duckdb.DuckDBPyConnection,
                            keys: Sequence[str]) -> list[dict[str, Any]]:
    """Open or deferred ``possible_duplicate`` items naming any of ``keys`` (every column
    REVIEW_SCHEMA writes, status 'open' or 'deferred' kept)."""
    if not keys:
        return []
    marks = ", ".join("?" * len(keys))
    return dict_rows(cur.execute(
        "SELECT item_seq, kind, record_seq, person_key, other_person_key, match_weight, "
        "match_probability, status, model_version, created_at FROM review_item "
        "WHERE kind = 'possible_duplicate' AND status IN ('open', 'deferred') "
        f"AND (person_key IN ({marks}) OR other_person_key IN ({marks})) ORDER BY item_seq",
        [*keys, *keys]))
