"""A consistent copy of the open registry file while the service writes (Decision 70).

Owns: the moment of the copy: under the Store's write lock, every acknowledged journal entry
folded into DuckDB, a CHECKPOINT, then the file (and a WAL, should one remain) copied while no
writer can commit; the record, person and audit counts read at that same moment. Must not:
decide which other files a backup holds, or write the archive (mpi/backup.py does).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from mpi.files import open_private
from mpi.store.audit import audit_head
from mpi.store.db import Store
from mpi.store.persons import person_counts
from mpi.store.records import count_records
from mpi.store.rows import first_row


@dataclass(frozen=True)
class Snapshot:
    """What was copied, and the registry's counts at the moment of the copy."""

    files: dict[str, Path]  # name in the backup -> the copy
    schema_version: int
    records: dict[str, int]
    persons: dict[str, int]
    audit_events: int
    audit_head: str | None


def _copy(src: Path, dest: Path) -> None:
    with src.open("rb") as fin, open_private(dest, exclusive=True) as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def registry_counts(store: Store) -> tuple[dict[str, int], dict[str, int], int, str | None]:
    """(records by status, persons by status, audit events, newest audit hash) as read now."""
    cur = store.cursor()
    head = audit_head(cur)
    row = first_row(cur.execute("SELECT count(*) FROM audit_event").fetchall())
    return (count_records(cur), person_counts(cur), int(row[0]) if row else 0,
            head[1] if head else None)


def snapshot(store: Store, staging: Path) -> Snapshot:
    """Copy the registry file into ``staging`` (0600) as of one moment, writers held meanwhile.

    Writers wait for the fold, the checkpoint and the copy (about the time to copy the file);
    readers do not."""
    name = store.path.name
    wal = store.path.with_name(name + ".wal")
    with store.write_lock:
        store.checkpoint()  # folds the journal first: DuckDB holds every acknowledged write
        files = {name: staging / name}
        _copy(store.path, files[name])
        if wal.exists() and wal.stat().st_size > 0:  # a checkpoint DuckDB deferred: replayed at open
            files[wal.name] = staging / wal.name
            _copy(wal, files[wal.name])
        records, persons, events, head = registry_counts(store)
        version = store.schema_version()
    return Snapshot(files, version, records, persons, events, head)
