"""The online write journal: small enrol write sets made durable by one append + fdatasync.

Owns: the journal file's format (framed, checksummed JSON entries with a sequence number),
appending an entry durably, reading the entries back after a crash (a damaged last entry is
dropped; damage before it stops the open, Decision 65), rotating segments, deleting a segment
once its entries are in DuckDB and moving a damaged one to ``journal-quarantine/``. Must not:
know what an entry means (mpi/store/writeset.py applies them) or decide when to fold them into
DuckDB (the Store does).

Why it exists: a DuckDB commit of one tiny write set costs several statements plus a commit
(about 2 ms on the benchmark VM) while one append + fdatasync costs about 0.25 ms. Small write
sets are acknowledged once their entry is on disk, and folded into DuckDB in groups shortly
after, by the same code that writes large batches directly (like SQLite's or Postgres' WAL).
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import logging
import os
import struct
import threading
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mpi.errors import JournalCorrupt

log = logging.getLogger("mpi.store")

_HEADER = struct.Struct("<QII")  # sequence number, payload length, crc32 of seq+length+payload
_DT = "$dt"
QUARANTINE_DIR = "journal-quarantine"  # in the data dir: damaged segments set aside, never deleted
# strict: damage before the last entry stops the open; keep_valid: fold every entry that
# verifies; quarantine: fold only what precedes the first damage (mpi journal recover).
RecoveryMode = Literal["strict", "keep_valid", "quarantine"]


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


def _frame_at(data: bytes, pos: int, min_seq: int) -> tuple[int, int, dict[str, Any]] | None:
    """(seq, end, payload) of an entry that verifies at ``pos``, else None."""
    if pos + _HEADER.size > len(data):
        return None
    seq, length, crc = _HEADER.unpack_from(data, pos)
    end = pos + _HEADER.size + length
    if seq < min_seq or end > len(data):
        return None
    body = data[pos + _HEADER.size:end]
    if zlib.crc32(struct.pack("<QI", seq, length) + body) != crc:
        return None
    try:
        payload = json.loads(body, object_hook=_hook)
    except ValueError:
        return None
    return (seq, end, payload) if isinstance(payload, dict) else None


@dataclass(frozen=True)
class Scan:
    """One segment read in full: every entry that verifies, and where unverifiable bytes start.

    After damage the reader resynchronises: it tries each later byte offset for a whole entry
    whose checksum verifies and whose sequence number is higher than the last one read (a
    false match needs a CRC-32 collision)."""

    size: int
    entries: list[tuple[int, int, dict[str, Any]]]  # (offset, seq, payload), in file order
    bad: list[int]  # offsets where a run of bytes that do not verify begins

    @property
    def first_bad(self) -> int | None:
        """Offset of the first byte that does not verify (None: the segment is whole)."""
        return self.bad[0] if self.bad else None

    def readable_after(self, offset: int) -> int:
        """How many verified entries start after ``offset``."""
        return sum(1 for pos, _seq, _p in self.entries if pos > offset)


def scan(data: bytes) -> Scan:
    """Every verified entry in a segment's bytes, resynchronising after each damaged stretch."""
    entries: list[tuple[int, int, dict[str, Any]]] = []
    bad: list[int] = []
    pos, min_seq = 0, 1
    while pos < len(data):
        frame = _frame_at(data, pos, min_seq)
        if frame is None:
            bad.append(pos)
            pos += 1
            while pos < len(data) and _frame_at(data, pos, min_seq) is None:
                pos += 1
            continue
        seq, end, payload = frame
        entries.append((pos, seq, payload))
        pos, min_seq = end, seq + 1
    return Scan(len(data), entries, bad)


@dataclass(frozen=True)
class SegmentReport:
    """What ``mpi journal recover --report`` says about one segment."""

    path: Path
    size: int
    entries: int  # entries that verify, before and after any damage
    first_bad: int | None
    readable_after: int  # verified entries after first_bad in this segment
    corrupt: bool  # damage followed by verified entries (here or in a later segment)


def _first_damage(scans: list[tuple[Path, Scan]]) -> tuple[int, int] | None:
    """(segment index, offset) of the first damage followed by a verified entry, else None.

    Damage with nothing verified after it anywhere is a torn last append: its fdatasync never
    returned, so it was never acknowledged."""
    later = [0] * (len(scans) + 1)
    for i in range(len(scans) - 1, -1, -1):
        later[i] = later[i + 1] + len(scans[i][1].entries)
    for i, (_seg, sc) in enumerate(scans):
        for bad in sc.bad:
            if later[i + 1] or sc.readable_after(bad):
                return i, bad
    return None


def _corrupt_message(seg: Path, offset: int, following: int) -> str:
    return (f"journal segment {seg} fails its checksum at byte offset {offset}, and {following} "
            "readable entries follow it: acknowledged writes may be in the damaged part, so the "
            "registry does not start (only a damaged last entry, an append that never returned, "
            "is dropped). The file is kept unchanged. Inspect it with `mpi journal recover "
            f"--data-dir {seg.parent}`, then run it with --keep-valid or --quarantine "
            "(docs/guide/operations.md).")


def segment_paths(registry_path: Path) -> list[Path]:
    """The journal segments of a registry file, oldest first."""
    prefix = registry_path.name + ".journal."
    found = [p for p in registry_path.parent.glob(prefix + "*") if p.name[len(prefix):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(prefix):]))


def inspect_segments(registry_path: Path) -> list[SegmentReport]:
    """Read every segment of a registry's journal without changing anything."""
    scans = [(seg, scan(seg.read_bytes())) for seg in segment_paths(registry_path)]
    damage = _first_damage(scans)
    out = []
    for i, (seg, sc) in enumerate(scans):
        first = sc.first_bad
        out.append(SegmentReport(
            seg, sc.size, len(sc.entries), first,
            sc.readable_after(first) if first is not None else 0,
            damage is not None and i >= damage[0] and bool(sc.bad)))
    return out


def quarantine(seg: Path) -> Path:
    """Move a segment, unchanged, to DATA_DIR/journal-quarantine/ (0700 dir, 0600 file)."""
    qdir = seg.parent / QUARANTINE_DIR
    qdir.mkdir(mode=0o700, exist_ok=True)
    qdir.chmod(0o700)
    dest, n = qdir / seg.name, 1
    while dest.exists():  # an earlier recovery set aside a segment of the same name
        dest, n = qdir / f"{seg.name}.{n}", n + 1
    os.replace(seg, dest)
    dest.chmod(0o600)
    _fsync_dir(qdir)
    _fsync_dir(seg.parent)
    log.warning("journal: %s moved to %s/ (damaged; kept for inspection)", seg.name, QUARANTINE_DIR)
    return dest


@dataclass
class Recovery:
    """What the last ``Journal.recover`` found and did (read by ``mpi journal recover``)."""

    mode: RecoveryMode = "strict"
    damaged: list[tuple[str, int]] = field(default_factory=list)  # (segment name, first bad offset)
    entries: int = 0  # entries handed back to be folded
    set_aside: list[Path] = field(default_factory=list)  # segments to quarantine, not delete
    quarantined: list[Path] = field(default_factory=list)  # where they went


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
        self._registry_path = registry_path
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
        self.recovery = Recovery()  # what the last recover() found (mpi journal recover)
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
        return segment_paths(self._registry_path)

    def recover(self, applied: int = 0, *,
                mode: RecoveryMode = "strict") -> list[tuple[int, dict[str, Any]]]:
        """Entries after ``applied`` left by an earlier process, oldest first.

        A damaged last entry is cut off (an append that never returned was never
        acknowledged). Damage followed by a verified entry raises ``JournalCorrupt`` in the
        ``strict`` mode and changes nothing; ``keep_valid`` hands back every verified entry and
        ``quarantine`` only those before the damage, and ``start`` then moves the damaged
        segment (for ``quarantine`` with every later one) aside instead of deleting it."""
        scans = [(seg, scan(seg.read_bytes())) for seg in self._segments()]
        damage = _first_damage(scans)
        self.recovery = Recovery(mode=mode)
        if damage is not None:
            i, offset = damage
            seg, sc = scans[i]
            if mode == "strict":
                following = sc.readable_after(offset) + sum(len(s.entries) for _p, s in scans[i + 1:])
                raise JournalCorrupt(_corrupt_message(seg, offset, following))
            self.recovery.damaged = [(p.name, s.bad[0]) for p, s in scans if s.bad]
            self.recovery.set_aside = [p for j, (p, s) in enumerate(scans)
                                       if s.bad or (mode == "quarantine" and j > i)]
        entries: list[tuple[int, dict[str, Any]]] = []
        for j, (seg, sc) in enumerate(scans):
            if sc.bad and damage is None:
                log.warning("journal %s: %d bytes from offset %d discarded (a last append that "
                            "never returned, so never acknowledged)",
                            seg.name, sc.size - sc.bad[0], sc.bad[0])
            for pos, seq, payload in sc.entries:
                if mode == "quarantine" and damage is not None and (j, pos) > damage:
                    break
                entries.append((seq, payload))
        entries.sort(key=lambda e: e[0])
        # past every verified entry, also those set aside: no sequence number is used twice
        top = max((seq for _p, sc in scans for _o, seq, _x in sc.entries), default=0)
        self.next_seq = max(self.next_seq, top + 1)
        entries = [(seq, p) for seq, p in entries if seq > applied]
        self.recovery.entries = len(entries)
        return entries

    def start(self) -> None:
        """Delete every old segment (call once their entries are in DuckDB) and open a new one;
        damaged segments that ``recover`` set aside go to journal-quarantine/ instead."""
        segments = self._segments()
        self._numbers = max((int(p.name[len(self._prefix):]) for p in segments), default=0) + 1
        for seg in segments:
            if seg in self.recovery.set_aside:
                self.recovery.quarantined.append(quarantine(seg))
            else:
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
                # a regular file takes a short write only when the disk (or quota) is full
                raise OSError(errno.ENOSPC, f"No space left on device: short write to the "
                              f"journal ({written} of {len(frame)} bytes)")
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
