"""Data carried through one write: per-record results, summaries, and the pending batch.

Owns: the plain result types of the use cases and the Arrow layouts of what a batch writes.
Pure data: no I/O.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from mpi.audit import AuditEntry
from mpi.errors import Problem


@dataclass(frozen=True)
class RecordResult:
    """Outcome for one stored record."""

    row: int
    source_record_id: str
    person_key: str | None
    outcome: str  # new | linked | review | unchanged | updated | withdrawn


@dataclass
class EnrolResult:
    """What an enrol call did, per record, plus the rows it refused."""

    results: list[RecordResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Outcome counts (plus 'rejected')."""
        out: dict[str, int] = {}
        for r in self.results:
            out[r.outcome] = out.get(r.outcome, 0) + 1
        rejected = len({p.row for p in self.problems})
        if rejected:
            out["rejected"] = rejected
        return out


@dataclass(frozen=True)
class LinkSummary:
    """What a full re-link changed."""

    records: int
    persons: int
    merges: int
    splits: int
    keys_changed: int
    new_keys: int
    edges: int
    model_version: str


@dataclass
class WriteBatch:
    """Pending writes of one enrol transaction."""

    now: dt.datetime
    new_rows: list[dict[str, Any]] = field(default_factory=list)
    changed_rows: list[dict[str, Any]] = field(default_factory=list)
    persons: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    lineage: list[dict[str, Any]] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    agencies: set[str] = field(default_factory=set)
    new_key_ids: list[str] = field(default_factory=list)


def records_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Arrow layout of source_record rows."""
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("record_seq", pa.int64()), ("agency", pa.string()), ("source_record_id", pa.string()),
        ("version", pa.int32()), ("status", pa.string()), ("person_key", pa.string()),
        ("content_hash", pa.int64()), ("key_id", pa.string()), ("research_consent", pa.bool_()),
        ("attributes", pa.string()), ("tokens", pa.list_(pa.int64())),
        ("created_at", pa.timestamp("us")), ("updated_at", pa.timestamp("us"))]))


def persons_table(batch: WriteBatch) -> pa.Table:
    """Arrow rows for the keys a batch minted."""
    n = len(batch.persons)
    return pa.table({"person_key": batch.persons, "status": ["active"] * n,
                     "created_at": pa.array([batch.now] * n, pa.timestamp("us")),
                     "retired_at": pa.nulls(n, pa.timestamp("us"))})


def events_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Arrow layout of key_event rows."""
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("event_seq", pa.int64()), ("person_key", pa.string()), ("event_type", pa.string()),
        ("cause", pa.string()), ("model_version", pa.string()), ("related_key", pa.string()),
        ("record_seq", pa.int64()), ("occurred_at", pa.timestamp("us"))]))
