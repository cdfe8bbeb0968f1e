"""The anchor of the audit log: its keys, its signed checkpoints and the checks against them.

Owns: the audit key file (the chain's HMAC key and the Ed25519 checkpoint-signing key, 0600,
outside the registry file), the checkpoint file (one signed JSON line per checkpoint: event
count, head hash, first keyed event, time; 0600, append-only), the start-up check of the tail
since the latest checkpoint and the full verification against every checkpoint (decision
0069). Must not: run SQL itself (mpi/store/audit.py) or print key material.

A checkpoint is signed over ``mpi-audit-checkpoint:v1\\n`` + the compact, key-sorted JSON of
``count``, ``head``, ``keyed_from`` and ``at``: an auditor needs only the public key.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import duckdb
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mpi.audit import GENESIS, AuditChain, Verification, verify
from mpi.config import Settings
from mpi.errors import AuditChainBroken, ConfigurationError
from mpi.extract.signing import key_fingerprint, public_key_pem
from mpi.files import FILE_MODE, write_private
from mpi.store import audit as astore

KEY_KIND = "mpi-audit-key"
MESSAGE_PREFIX = b"mpi-audit-checkpoint:v1\n"
_TAIL_BYTES = 16_384  # the latest checkpoint is in the file's last few hundred bytes


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement: the log held ``count`` events, the last one hashed ``head``."""

    count: int
    head: str
    keyed_from: int  # the first event sealed with the HMAC key (earlier ones: plain SHA-256)
    at: str
    signature: str = ""  # base64 Ed25519 over ``message()``

    def message(self) -> bytes:
        """The signed bytes."""
        body = {"count": self.count, "head": self.head, "keyed_from": self.keyed_from,
                "at": self.at}
        return MESSAGE_PREFIX + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class AuditKey:
    """The chain's HMAC key and the checkpoint-signing key (never logged or returned)."""

    hmac: bytes
    signing: Ed25519PrivateKey

    def sign(self, cp: Checkpoint) -> Checkpoint:
        """``cp`` with its signature."""
        sig = base64.b64encode(self.signing.sign(cp.message())).decode()
        return Checkpoint(cp.count, cp.head, cp.keyed_from, cp.at, sig)

    def signed_by_me(self, cp: Checkpoint) -> bool:
        """Whether ``cp`` carries a valid signature by this key."""
        try:
            self.signing.public_key().verify(base64.b64decode(cp.signature), cp.message())
        except (InvalidSignature, ValueError):
            return False
        return True


def load_or_create_key(path: Path) -> AuditKey:
    """Read the audit key file, creating it (0600) on first use."""
    if not path.exists():
        body = {"kind": KEY_KIND, "hmac": os.urandom(32).hex(), "ed25519": os.urandom(32).hex()}
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another process made it first: use it
            write_private(path, json.dumps(body) + "\n", exclusive=True)
    try:
        data = json.loads(path.read_text())
        hkey, seed = bytes.fromhex(data["hmac"]), bytes.fromhex(data["ed25519"])
        if data.get("kind") != KEY_KIND or len(hkey) < 32 or len(seed) != 32:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise ConfigurationError(f"{path} is not an mpi audit key file") from None
    return AuditKey(hkey, Ed25519PrivateKey.from_private_bytes(seed))


def _parse(line: str, where: str) -> Checkpoint:
    try:
        d = json.loads(line)
        return Checkpoint(int(d["count"]), str(d["head"]), int(d["keyed_from"]), str(d["at"]),
                          str(d["signature"]))
    except (ValueError, KeyError, TypeError):
        raise AuditChainBroken(f"audit checkpoint file: {where} is not a checkpoint") from None


def read_checkpoints(path: Path) -> list[Checkpoint]:
    """Every checkpoint in the file, oldest first (empty when there is no file)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [_parse(line, f"line {i}") for i, line in enumerate(lines, 1) if line.strip()]


def latest_checkpoint(path: Path) -> Checkpoint | None:
    """The newest checkpoint, reading only the end of the file."""
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - _TAIL_BYTES))
            lines = [ln for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except FileNotFoundError:
        return None
    return _parse(lines[-1], "the last line") if lines else None


def append_checkpoint(path: Path, cp: Checkpoint) -> None:
    """Append one checkpoint line durably (the file is created 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        os.write(fd, (json.dumps(asdict(cp), separators=(",", ":")) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_tail(cur: duckdb.DuckDBPyConnection, key: AuditKey, cp: Checkpoint,
                head: tuple[int, str]) -> str | None:
    """Why the stored log does not extend ``cp`` (None when it does). Reads only the events
    from the checkpoint on."""
    if not key.signed_by_me(cp):
        return "the latest audit checkpoint's signature does not verify (forged checkpoint)"
    if head[0] < cp.count:
        return (f"audit log truncated: the signed checkpoint of {cp.at} covers {cp.count} "
                f"events but the log ends at event {head[0]}")
    rows = astore.list_audit(cur, after=max(cp.count - 1, 0))
    if cp.count > 0:
        first = rows.pop(0) if rows else None
        if first is None or int(first["audit_seq"]) != cp.count or first["entry_hash"] != cp.head:
            return (f"audit event {cp.count} does not match the signed checkpoint of {cp.at} "
                    "(edited or re-hashed)")
    v = verify(rows, key=key.hmac, keyed_from=cp.keyed_from, after=(cp.count, cp.head))
    return None if v.ok else f"audit event {v.first_bad_seq} after the checkpoint: {v.reason}"


class AuditAnchor:
    """Keys, checkpoints and checks of one registry's audit log."""

    def __init__(self, settings: Settings, cur: duckdb.DuckDBPyConnection, *,
                 clock: Callable[[], dt.datetime], lock: threading.RLock, refuse: bool = True
                 ) -> None:
        """Load the key and the latest checkpoint and check the tail since it; a broken tail
        raises AuditChainBroken (or, with ``refuse=False``, only stops checkpointing)."""
        self.path, self.every, self.clock, self.lock = (
            settings.audit_checkpoints_path, settings.audit_checkpoint_every, clock, lock)
        had_key = settings.audit_key_path.exists()
        latest = latest_checkpoint(self.path)
        if latest is None and had_key:
            self.broken: str | None = (
                f"audit checkpoint file {self.path.name} is missing or empty but the audit key "
                "exists: restore it (or an auditor's copy) before starting")
        elif latest is not None and not had_key:
            self.broken = (f"audit key {settings.audit_key_path.name} is missing but signed "
                           "checkpoints exist: restore the key before starting")
        else:
            self.broken = None
        self.key = load_or_create_key(settings.audit_key_path)
        stored = astore.audit_head(cur) or (0, GENESIS)
        if latest is None:  # a new registry, or one written before decision 0069
            latest = Checkpoint(stored[0], stored[1], stored[0] + 1, "")
        elif self.broken is None:
            self.broken = _check_tail(cur, self.key, latest, stored)
        if self.broken is not None and refuse:
            raise AuditChainBroken(f"refusing to start: {self.broken}")
        self.keyed_from = latest.keyed_from
        self._latest: Checkpoint | None = latest if latest.signature else None
        self.chain = AuditChain(seq=stored[0], head=stored[1], key=self.key.hmac,
                                on_advance=self._advanced)
        self.refresh()

    def latest(self) -> Checkpoint | None:
        """The newest checkpoint written or read."""
        return self._latest

    def _advanced(self, seq: int, head: str) -> None:
        latest = self._latest
        if latest is None or seq - latest.count >= self.every:
            self._write(seq, head)

    def _write(self, seq: int, head: str) -> None:
        if self.broken is not None:  # never sign a head that failed its check
            return
        cp = self.key.sign(Checkpoint(seq, head, self.keyed_from,
                                      self.clock().isoformat(timespec="seconds") + "Z"))
        append_checkpoint(self.path, cp)
        self._latest = cp

    def refresh(self) -> None:
        """Checkpoint the current head if events were added since the latest checkpoint."""
        with self.lock:
            latest = self._latest
            if latest is None or self.chain.seq != latest.count:
                self._write(self.chain.seq, self.chain.head)

    def verify(self, rows: Sequence[Mapping[str, Any]]) -> Verification:
        """The whole chain, and every signed checkpoint against it (truncation, re-hashing)."""
        try:
            checkpoints = read_checkpoints(self.path)
        except AuditChainBroken as exc:
            return Verification(False, len(rows), None, str(exc))
        for i, cp in enumerate(checkpoints, 1):
            if not self.key.signed_by_me(cp):
                return Verification(False, len(rows), None, f"audit checkpoint {i} ({cp.at}): "
                                    "signature does not verify (forged checkpoint)")
        if not checkpoints:
            return Verification(False, len(rows), None, self.broken) if self.broken else \
                verify(rows, key=self.key.hmac, keyed_from=self.keyed_from)
        v = verify(rows, key=self.key.hmac, keyed_from=checkpoints[-1].keyed_from)
        if not v.ok:
            return v
        latest = checkpoints[-1]
        if v.events < latest.count:
            return Verification(False, v.events, v.events + 1, (
                f"log truncated: it ends at event {v.events} but the signed checkpoint of "
                f"{latest.at} covers {latest.count} events"))
        counts = {cp.count for cp in checkpoints}
        heads = {0: GENESIS, **{int(r["audit_seq"]): r["entry_hash"] for r in rows
                                if int(r["audit_seq"]) in counts}}
        for cp in checkpoints:
            if heads.get(cp.count) != cp.head:
                return Verification(False, v.events, cp.count, "does not match the signed "
                                    f"checkpoint of {cp.at} (edited or re-hashed)")
        if self.broken:  # e.g. the key was missing at open and a new one was made
            return Verification(False, v.events, None, self.broken)
        return Verification(True, v.events, anchored=latest.count)

    def published(self, limit: int) -> dict[str, Any]:
        """The newest ``limit`` checkpoints (after checkpointing the current head) and the
        public key that verifies them."""
        self.refresh()
        public = self.key.signing.public_key()
        return {"algorithm": "Ed25519", "public_key_pem": public_key_pem(public),
                "fingerprint": key_fingerprint(public),
                "checkpoints": [asdict(cp) for cp in read_checkpoints(self.path)[-limit:]]}
