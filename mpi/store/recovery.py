"""Explicit recovery of a damaged online journal (``mpi journal recover``, Decision 65).

Owns: opening a registry file in a journal recovery mode, so the entries that verify are folded
and the damaged segment is moved to DATA_DIR/journal-quarantine/ (never deleted), and saying
what that did. Must not: write audit events (mpi/identity/journal_recovery.py does, once the
registry opens) or print.
"""

from __future__ import annotations

from pathlib import Path

from mpi.store.db import Store
from mpi.store.journal import Recovery, RecoveryMode


def fold_damaged_journal(registry_path: Path, mode: RecoveryMode, *,
                         memory_limit: str | None = None) -> Recovery:
    """Open the registry file with ``mode``, fold what it allows, close; what was done."""
    store = Store(registry_path, memory_limit=memory_limit, journal_recovery=mode)
    try:
        return store.journal.recovery
    finally:
        store.close()
