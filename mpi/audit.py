"""The hash-chained audit log: entries, sealing them into a chain, and verifying a chain.

Owns: the chain rule. Each event's hash is SHA-256 over the previous hash and the event's
canonical JSON, so editing, deleting or reordering any event breaks every hash after it. Pure:
no I/O, no clock (``now`` comes in). Must not: put tokens, secrets or raw person keys in an
entry (targets name keys by a digest).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
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


def entry_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    """The hash of one event given its predecessor's hash."""
    return hashlib.sha256(prev_hash.encode() + b"\x00" + _canonical(row)).hexdigest()


class AuditChain:
    """The head of the chain; seals new entries onto it."""

    def __init__(self, *, seq: int, head: str) -> None:
        self.seq = seq
        self.head = head

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
            row["entry_hash"] = head = entry_hash(head, row)
            rows.append(row)
        return rows, (seq, head)

    def advance(self, state: tuple[int, str]) -> None:
        """Move the head after a commit."""
        self.seq, self.head = state


@dataclass(frozen=True)
class Verification:
    """Result of verifying a chain."""

    ok: bool
    events: int
    first_bad_seq: int | None = None
    reason: str | None = None


def verify(rows: Iterable[Mapping[str, Any]]) -> Verification:
    """Check sequence, links and hashes; name the first bad event."""
    prev, expected_seq, n = GENESIS, 1, 0
    for row in rows:
        n += 1
        seq = int(row["audit_seq"])
        if seq != expected_seq:
            return Verification(False, n, seq, f"expected event {expected_seq} here, found {seq} "
                                "(deleted or reordered)")
        if row["prev_hash"] != prev:
            return Verification(False, n, seq, "does not link to the previous event")
        if entry_hash(prev, row) != row["entry_hash"]:
            return Verification(False, n, seq, "content does not match its hash (edited)")
        prev, expected_seq = row["entry_hash"], expected_seq + 1
    return Verification(True, n)
