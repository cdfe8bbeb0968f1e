"""Data carried through one write: per-record results, summaries, and the pending batch.

Owns: the plain result types of the use cases and the Arrow layouts of what a batch writes.
Pure data: no I/O.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

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
    person_rows: list[dict[str, Any]] = field(default_factory=list)  # new keys (mint events)
    retired: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    lineage: list[dict[str, Any]] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    agencies: set[str] = field(default_factory=set)
    new_key_ids: list[str] = field(default_factory=list)
