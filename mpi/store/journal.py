"""The online write journal: small enrol write sets made durable by one append + fdatasync.

Owns: the journal file's format (framed, checksummed JSON entries with a sequence number),
appending an entry durably, reading the entries back after a crash, rotating segments and
deleting a segment once its entries are in DuckDB. Must not: know what an entry means
(mpi/store/writeset.py applies them) or decide when to fold them into DuckDB (the Store does).

Why it exists: a DuckDB commit of one tiny write set costs several statements plus a commit
(about 2 ms on the benchmark VM) while one append + fdatasync costs about 0.25 ms. Small write
sets are acknowledged once their entry is on disk, and folded into DuckDB in groups shortly
after, by the same code that writes large batches directly (like SQLite's or Postgres' WAL).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import struct
import threading
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("mpi.store")

_HEADER = struct.Struct("<QII")  # sequence number, payload length, crc32 of seq+length+payload
_DT = "$dt"


def _default(obj: Any) -> Any:
    if isinstance(obj, dt.datetime):
        return {_DT: obj.isoformat()}
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    raise TypeError(f"cannot journal a {type(obj).__name__}")


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and _DT in obj:
        return dt.datetime.fromisoformat(obj[_DT])
    return obj


def encode(seq: int, payload: Mapping[str, Any]) -> bytes:
    """One framed entry: header then compact JSON (datetimes tagged so they come back typed)."""
    body = json.dumps(payload, default=_default, separators=(",", ":")).encode()
    head = struct.pack("<QI", seq, len(body))
    return _HEADER.pack(seq, len(body), zlib.crc32(head + body)) + body


def decode(data: bytes) -> tuple[list[tuple[int, dict[str, Any]]], int]:
    """Whole entries in ``data`` and the offset where they end (a torn or corrupt tail stops it)."""
    out: list[tuple[int, dict[str, Any]]] = []
    pos = 0
    while pos + _HEADER.size <= len(data):
        seq, length, crc = _HEADER.unpack_from(data, pos)
        end = pos + _HEADER.size + length
        body = data[pos + _HEADER.size:end]
        if end > len(data) or zlib.crc32(struct.pack("<QI", seq, length) + body) != crc:
            break
        out.append((seq, json.loads(body, object_hook=_hook)))
        pos = end
    return out, pos


class JournalBusy(Exception):
    """Another open registry already owns this journal."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """Append-only segment files of write sets not yet folded into DuckDB.

    Segments are named ``<registry file>.journal.<n>``. Appends go to the newest one; a fold
    first rotates to a new segment, so appends go on while the old one is folded, and a
    segment is deleted once every entry in it is in DuckDB. Callers serialize appends and
    rotations (the registry's write lock).
    """

    def __init__(self, registry_path: Path) -> None:
        self._dir = registry_path.parent
        self._prefix = registry_path.name + ".journal."
        self._fd: int | None = None
        self._active: Path | None = None
        self._active_last = 0  # last seq written to the active segment
        self._size = 0
        self._broken = False  # a failed append could not be cut back: no more appends
        self._closed: list[tuple[Path, int]] = []  # rotated-out segments and their last seq
        self._spare: tuple[int, Path] | None = None  # created ahead, for the next rotation
        self._spare_lock = threading.Lock()  # guards _spare, _preparing, _numbers, _closed
        self._preparing = False
        self._numbers = 1  # next segment number to hand out
        self.next_seq = 1
        # One journal per registry file, even within one process (DuckDB lets a process open
        # a file twice; two journals would replay and delete each other's segments).
        self._lock_fd = os.open(self._dir / (registry_path.name + ".journal-lock"),
                                os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise JournalBusy(f"{registry_path.name} is already open in this process") from None

    @property
    def active(self) -> Path | None:
        """The segment appends go to now."""
        return self._active

    def _segments(self) -> list[Path]:
        found = [p for p in self._dir.glob(self._prefix + "*")
                 if p.name[len(self._prefix):].isdigit()]
        return sorted(found, key=lambda p: int(p.name[len(self._prefix):]))

    def recover(self) -> list[tuple[int, dict[str, Any]]]:
        """Every complete entry left by an earlier process, oldest first (torn tails cut off:
        an append that never returned was never acknowledged)."""
        entries: list[tuple[int, dict[str, Any]]] = []
        for seg in self._segments():
            data = seg.read_bytes()
            found, end = decode(data)
            if end < len(data):
                log.warning("journal %s: %d bytes after the last complete entry discarded "
                            "(a write that was never acknowledged)", seg.name, len(data) - end)
            entries.extend(found)
        entries.sort(key=lambda e: e[0])
        if entries:
            self.next_seq = max(self.next_seq, entries[-1][0] + 1)
        return entries

    def start(self) -> None:
        """Delete every old segment (call once their entries are in DuckDB) and open a new one."""
        segments = self._segments()
        self._numbers = max((int(p.name[len(self._prefix):]) for p in segments), default=0) + 1
        for seg in segments:
            seg.unlink()
        self._closed = []
        self._open_new(self._reserve())

    def _open_new(self, number: int) -> None:
        path = self._dir / f"{self._prefix}{number:08d}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            _fsync_dir(self._dir)  # the new file's name must survive a crash too
        except BaseException:
            os.close(fd)
            path.unlink()
            raise
        self._switch_to(fd, path)

    def _switch_to(self, fd: int, path: Path) -> None:
        """Make ``path`` the active segment; the old one waits for its fold to be deleted."""
        if self._fd is not None and self._active is not None:
            os.close(self._fd)
            with self._spare_lock:  # drop_through runs on the folding thread
                self._closed.append((self._active, self._active_last))
        self._fd, self._active, self._active_last, self._size = fd, path, 0, 0

    def append(self, payload: Mapping[str, Any]) -> int:
        """Write one entry and return its sequence number once it is on disk (fdatasync)."""
        if self._fd is None:
            raise OSError("the journal is closed")
        if self._broken:
            raise OSError("the journal could not be cut back after a failed write; restart "
                          "the service (the next open recovers every acknowledged write)")
        seq = self.next_seq
        frame = encode(seq, payload)
        try:
            written = os.write(self._fd, frame)
            if written != len(frame):
                raise OSError(f"short write to the journal ({written} of {len(frame)} bytes)")
            os.fdatasync(self._fd)
        except BaseException:
            # Never leave a failed entry in front of later ones: cut the file back. If even
            # that fails, stop appending: the entry may be whole on disk (then the next open
            # applies it, as a commit whose reply was lost), and later writes would reuse its
            # sequence numbers.
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                self._broken = True
            raise
        self._size += len(frame)
        self.next_seq = seq + 1
        self._active_last = seq
        return seq

    def rotate(self) -> None:
        """Send later appends to a new segment (the current one is about to be folded).

        Uses the spare segment when one is ready, so the caller (holding the write lock) does
        not wait for a file creation and a directory fsync."""
        with self._spare_lock:
            spare, self._spare = self._spare, None
        if spare is None:
            self._open_new(self._reserve())
        else:
            self._switch_to(*spare)

    def prepare_spare(self) -> None:
        """Create (durably) the segment the next rotation switches to. Safe to call from another
        thread than the appender's; does nothing if a spare is ready or being made."""
        with self._spare_lock:
            if self._spare is not None or self._preparing or self._fd is None:
                return
            self._preparing = True
            number = self._numbers
            self._numbers += 1
        try:
            path = self._dir / f"{self._prefix}{number:08d}"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            _fsync_dir(self._dir)
            with self._spare_lock:
                self._spare = (fd, path)
        finally:
            with self._spare_lock:
                self._preparing = False

    def _reserve(self) -> int:
        with self._spare_lock:
            number = self._numbers
            self._numbers += 1
            return number

    def drop_through(self, seq: int) -> None:
        """Delete rotated-out segments whose entries are all folded (sequence <= ``seq``)."""
        with self._spare_lock:  # rotations append to the list concurrently
            done = [path for path, last in self._closed if last <= seq]
            self._closed = [(path, last) for path, last in self._closed if last > seq]
        for path in done:
            path.unlink(missing_ok=True)

    def close(self, *, all_folded: bool) -> None:
        """Close the active segment; delete it and its predecessors when all are folded."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._spare is not None:
            os.close(self._spare[0])
            self._spare = None
        if all_folded:
            for seg in self._segments():
                seg.unlink()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = -1
