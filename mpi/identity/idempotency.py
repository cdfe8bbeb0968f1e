"""Idempotency keys: the same key and request give the stored response; another request, 409.

Owns: hashing a request, serializing callers that use the same key (striped locks), and
storing the first response per (principal, key). Must not: run SQL (mpi/store/principals.py)
or know about HTTP.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mpi.errors import Conflict, InvalidInput, Problem
from mpi.store import principals as pstore

if TYPE_CHECKING:
    from mpi.identity.registry import Registry

_STRIPES = 64
MAX_KEY_LEN = 255


def request_hash(payload: Any) -> str:
    """SHA-256 over the canonical JSON of a request payload."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def check_key(key: str) -> None:
    """Refuse keys that are empty, too long or not printable ASCII."""
    if not key or len(key) > MAX_KEY_LEN or not (key.isascii() and key.isprintable()):
        raise InvalidInput("invalid Idempotency-Key", problems=[Problem(
            None, "Idempotency-Key", f"1-{MAX_KEY_LEN} printable ASCII characters")])


_PURGE_EVERY = dt.timedelta(hours=1)


class IdempotencyKeys:
    """Stored first responses per (principal, idempotency key) of one registry, each kept for
    ``settings.idempotency_retention_hours`` (then forgotten: the key may be used again)."""

    def __init__(self, registry: Registry) -> None:
        self._reg = registry
        self._locks = [threading.Lock() for _ in range(_STRIPES)]
        self._keep = dt.timedelta(hours=registry.settings.idempotency_retention_hours)
        self._purged: dt.datetime | None = None  # when expired responses were last deleted

    def run(self, principal_id: str, key: str, *, digest: str,
            compute: Callable[[], dict[str, Any]],
            on_replay: Callable[[], None] | None = None,
            on_conflict: Callable[[], None] | None = None) -> dict[str, Any]:
        """The stored response for ``key``, or ``compute()``'s (then stored); Conflict on reuse."""
        check_key(key)
        lock = self._locks[hash((principal_id, key)) % _STRIPES]
        with lock:
            cutoff = self._reg.clock() - self._keep
            found = pstore.find_idempotent_response(self._reg.store.cursor(),
                                                    principal_id=principal_id, idempotency_key=key,
                                                    since=cutoff)
            if found is not None:
                if found[0] != digest:
                    if on_conflict is not None:
                        on_conflict()
                    raise Conflict("this Idempotency-Key was used with a different request")
                if on_replay is not None:
                    on_replay()
                stored: dict[str, Any] = json.loads(found[1])
                return stored
            response = compute()
            now = self._reg.clock()
            purge = self._purged is None or now - self._purged >= _PURGE_EVERY
            with self._reg.store.transaction() as cur:
                pstore.insert_idempotent_response(
                    cur, principal_id=principal_id, idempotency_key=key, request_hash=digest,
                    response=json.dumps(response, separators=(",", ":")), now=now,
                    expired_before=cutoff)
                if purge:  # at most hourly, riding on a write that commits anyway
                    pstore.purge_idempotent_responses(cur, before=now - self._keep)
            if purge:
                self._purged = now
            return response
