"""The hash-chained audit log: entries, sealing them into a chain, and verifying a chain.

Owns: the chain rule. Each event's hash is HMAC-SHA256, keyed with the audit key (kept outside
the database, mpi/identity/audit_anchor.py), over the previous hash and the event's canonical
JSON, so editing, deleting or reordering any event breaks every hash after it and nobody
without the key can re-hash the rest (decision 0069). Events written before the key existed
(``seq < keyed_from``) keep the plain SHA-256 rule. Pure: no I/O, no clock (``now`` comes
in). Must not: put tokens, secrets or raw person keys in an entry (targets name keys by a digest).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    """One thing a principal did (or tried to do)."""

    principal: str
    action: str
    target: str
    outcome: str = "ok"
    detail: Mapping[str, Any] | None = None


def key_ref(person_key: str) -> str:
    """How the audit log names a person key: a digest, never the key itself."""
    return "person:" + hashlib.sha256(person_key.encode()).hexdigest()[:16]


def _canonical(row: Mapping[str, Any]) -> bytes:
    fields = {k: row[k] for k in ("audit_seq", "occurred_at", "principal", "action", "target",
                                  "outcome", "detail")}
    at = fields["occurred_at"]
    fields["occurred_at"] = at.isoformat() if isinstance(at, dt.datetime) else str(at)
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode()


def entry_hash(prev_hash: str, row: Mapping[str, Any], key: bytes | None = None) -> str:
    """The hash of one event given its predecessor's hash: HMAC-SHA256 with ``key``, plain
    SHA-256 without (events from before decision 0069)."""
    msg = prev_hash.encode() + b"\x00" + _canonical(row)
    if key is None:
        return hashlib.sha256(msg).hexdigest()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


class AuditChain:
    """The head of the chain; seals new entries onto it."""

    def __init__(self, *, seq: int, head: str, key: bytes | None = None,
                 on_advance: Callable[[int, str], None] | None = None) -> None:
        self.seq = seq
        self.head = head
        self.key = key  # seals keyed events (HMAC); None: the plain pre-0069 rule
        self.on_advance = on_advance  # told the new head after each commit (checkpoints)

    def seal(self, entries: Iterable[AuditEntry], *, now: dt.datetime
             ) -> tuple[list[dict[str, Any]], tuple[int, str]]:
        """Rows for ``entries`` chained after the head, and the head after them (not applied)."""
        seq, head = self.seq, self.head
        rows = []
        for e in entries:
            seq += 1
            row: dict[str, Any] = {
                "audit_seq": seq, "occurred_at": now, "principal": e.principal,
                "action": e.action, "target": e.target, "outcome": e.outcome,
                "detail": json.dumps(dict(e.detail), sort_keys=True, separators=(",", ":"))
                if e.detail else None, "prev_hash": head}
            row["entry_hash"] = head = entry_hash(head, row, self.key)
            rows.append(row)
        return rows, (seq, head)

    def advance(self, state: tuple[int, str]) -> None:
        """Move the head after a commit."""
        self.seq, self.head = state
        if self.on_advance is not None:
            self.on_advance(*state)


@dataclass(frozen=True)
class Verification:
    """Result of verifying a chain."""

    ok: bool
    events: int
    first_bad_seq: int | None = None
    reason: str | None = None
    anchored: int | None = None  # events covered by the latest signed checkpoint checked


def verify(rows: Iterable[Mapping[str, Any]], *, key: bytes | None = None, keyed_from: int = 1,
           after: tuple[int, str] = (0, GENESIS)) -> Verification:
    """Check sequence, links and hashes of the events following ``after`` (seq, hash); events
    from ``keyed_from`` on are checked with ``key``. Names the first bad event."""
    (start, prev), n = after, 0
    expected_seq = start + 1
    for row in rows:
        n += 1
        seq = int(row["audit_seq"])
        if seq != expected_seq:
            return Verification(False, n, seq, f"expected event {expected_seq} here, found {seq} "
                                "(deleted or reordered)")
        if row["prev_hash"] != prev:
            return Verification(False, n, seq, "does not link to the previous event")
        if entry_hash(prev, row, key if seq >= keyed_from else None) != row["entry_hash"]:
            return Verification(False, n, seq, "content does not match its hash (edited)")
        prev, expected_seq = row["entry_hash"], expected_seq + 1
    return Verification(True, n)
