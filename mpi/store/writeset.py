"""Applying enrol write sets (records, keys, events, review items, audit rows) to DuckDB.

Owns: the one order in which an enrol's rows are written, for a single large batch written
directly and for journaled small write sets folded in groups. Must not: decide anything (the
registry builds the write sets).

A write set is a plain dict (so the journal can store it as JSON)::

    now, agencies, key_ids, persons, new_rows, changed_rows, retired, events, lineage,
    reviews, audit

Consecutive write sets are concatenated into one set of statements unless two of them touch the
same record (a record created and then changed must be inserted before it is updated).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import duckdb

from mpi.agency.schema import SCHEMA_VERSION
from mpi.store import audit as astore
from mpi.store import persons as pstore
from mpi.store import records as rstore

WriteSet = dict[str, Any]
_LISTS = ("persons", "new_rows", "changed_rows", "events", "lineage", "reviews", "audit")


def make(*, now: dt.datetime, agencies: Sequence[str] = (), key_ids: Sequence[str] = (),
         persons: Sequence[dict[str, Any]] = (), new_rows: Sequence[dict[str, Any]] = (),
         changed_rows: Sequence[dict[str, Any]] = (), retired: Sequence[str] = (),
         events: Sequence[dict[str, Any]] = (), lineage: Sequence[dict[str, Any]] = (),
         reviews: Sequence[dict[str, Any]] = (), audit: Sequence[dict[str, Any]] = ()) -> WriteSet:
    """A write set; person rows get their creation time here so sets can be concatenated."""
    return {"now": now, "agencies": list(agencies), "key_ids": list(key_ids),
            "persons": [{**p, "created_at": now} for p in persons], "new_rows": list(new_rows),
            "changed_rows": list(changed_rows), "retired": list(retired), "events": list(events),
            "lineage": list(lineage), "reviews": list(reviews), "audit": list(audit)}


def record_count(ws: WriteSet) -> int:
    """Records a write set stores (new or changed)."""
    return len(ws["new_rows"]) + len(ws["changed_rows"])


def apply(cur: duckdb.DuckDBPyConnection, sets: Sequence[WriteSet]) -> None:
    """Write ``sets`` in order inside the caller's transaction."""
    group: list[WriteSet] = []
    seen: set[int] = set()
    for ws in sets:
        seqs = {int(r["record_seq"]) for r in (*ws["new_rows"], *ws["changed_rows"])}
        if seqs & seen:
            _apply_group(cur, group)
            group, seen = [], set()
        group.append(ws)
        seen |= seqs
    if group:
        _apply_group(cur, group)


def _cat(group: Sequence[WriteSet], name: str) -> list[dict[str, Any]]:
    if len(group) == 1:
        return list(group[0][name])
    return [row for ws in group for row in ws[name]]


def _apply_group(cur: duckdb.DuckDBPyConnection, group: Sequence[WriteSet]) -> None:
    rows = {name: _cat(group, name) for name in _LISTS}
    for ws in group:
        for agency in ws["agencies"]:
            rstore.ensure_agency(cur, agency, now=ws["now"])
        for kid in ws["key_ids"]:
            pstore.add_linkage_key_id(cur, kid, schema_version=SCHEMA_VERSION, now=ws["now"])
    pstore.insert_persons(cur, rows["persons"], now=group[0]["now"])
    rstore.insert_records(cur, rows["new_rows"])
    if rows["changed_rows"]:
        rstore.replace_records(cur, rows["changed_rows"])
    for ws in group:
        if ws["retired"]:
            pstore.retire_persons(cur, ws["retired"], now=ws["now"])
    pstore.insert_events(cur, rows["events"])
    pstore.insert_lineage(cur, rows["lineage"])
    pstore.insert_review_items(cur, rows["reviews"])
    astore.append_audit(cur, rows["audit"])


def write_regroup(cur: duckdb.DuckDBPyConnection, *, now: dt.datetime,
                  persons: Sequence[dict[str, Any]], record_seqs: Sequence[int],
                  person_keys: Sequence[str], retired: Sequence[str],
                  events: Sequence[dict[str, Any]], lineage: Sequence[dict[str, Any]],
                  reviews: Sequence[dict[str, Any]] = ()) -> None:
    """Write a regrouping (re-link, promote, steward merge or split) in the enrol order:
    new persons, then the records' new keys, retired persons, events, lineage, review items."""
    pstore.insert_persons(cur, persons, now=now)
    if record_seqs:
        rstore.set_person_keys(cur, list(record_seqs), list(person_keys), now=now)
    if retired:
        pstore.retire_persons(cur, retired, now=now)
    pstore.insert_events(cur, events)
    pstore.insert_lineage(cur, lineage)
    pstore.insert_review_items(cur, reviews)
