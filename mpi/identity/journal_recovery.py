"""The operator's recovery of a damaged online journal: report, keep valid entries, quarantine.

Owns: ``report_journal`` and ``recover_journal`` (mpi/store/recovery.py folds and sets the
damaged segment aside) and the ``journal.recover`` audit event, written once the registry
opens again. Must not: parse arguments or print (mpi/cli/journal.py), or read journal files
itself (mpi/store/journal.py owns the format).
"""

from __future__ import annotations

from typing import Any

from mpi.audit import AuditEntry
from mpi.config import Settings
from mpi.identity.registry import Registry
from mpi.store.journal import QUARANTINE_DIR, Recovery, RecoveryMode, SegmentReport, inspect_segments
from mpi.store.recovery import fold_damaged_journal

ACTION = "journal.recover"


def report_journal(settings: Settings) -> list[SegmentReport]:
    """Every journal segment of the registry, read without changing anything."""
    return inspect_segments(settings.registry_path)


def recover_journal(settings: Settings, mode: RecoveryMode, *, actor: str) -> Recovery:
    """Fold what ``mode`` keeps, set the damaged segment aside and audit it (``journal.recover``).

    Does nothing, and audits nothing, when no segment is damaged."""
    recovery = fold_damaged_journal(settings.registry_path, mode,
                                    memory_limit=settings.duckdb_memory_limit)
    if not recovery.damaged:
        return recovery
    detail: dict[str, Any] = {
        "mode": mode, "entries_folded": recovery.entries,
        "damaged": [{"segment": name, "offset": offset} for name, offset in recovery.damaged],
        "quarantined": [f"{QUARANTINE_DIR}/{p.name}" for p in recovery.quarantined]}
    reg = Registry(settings)
    try:
        reg.record_audit([AuditEntry(actor, ACTION, "journal", "ok", detail)])
    finally:
        reg.close()
    return recovery
