"""Agency-scoped person keys: what an agency whose agreement forbids cross-agency knowledge sees.

Owns: the per-agency key scope (``shared``: the master key, today's behaviour; ``agency``: a
key derived for that agency only), the derivation both ways (a keyed pseudorandom permutation
of the key's 100 bits per agency, so no lookup table is needed and a retired key's scoped form
still resolves and forwards), and the agency's view of enrol outcomes (``new`` or ``linked``
judged only by the agency's own records, so an outcome never tells that another agency holds
the person) (Decision 72). Must not: run SQL (mpi/store), know about HTTP, or log a key or the
scope secret.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import duckdb

from mpi.errors import InvalidInput, NotFound, Problem
from mpi.identity.keys import KEY_PREFIX
from mpi.identity.results import RecordResult
from mpi.store import persons as pstore

if TYPE_CHECKING:
    from mpi.identity.registry import Registry

NO_SUCH_PERSON = "no such person key"
SHARED = "shared"
AGENCY = "agency"
SCOPES = (SHARED, AGENCY)

_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"  # RFC 4648 base32, lower case (as mint_key)
_DIGIT = {c: i for i, c in enumerate(_ALPHABET)}
_BODY = 20  # characters after the prefix: 100 bits
_HALF = 50
_MASK = (1 << _HALF) - 1
_ROUNDS = 10  # as NIST FF1's Feistel rounds
_LABEL = b"mpi agency-scoped person key v1\x00"
# Outcomes that say whether a record joined an existing person; a scoped agency sees them only
# through its own records.
_JOINING = frozenset({"new", "linked", "review"})


def check_scope(scope: str) -> str:
    """``scope`` when it is a known key scope; InvalidInput naming ``key_scope`` otherwise."""
    if scope not in SCOPES:
        raise InvalidInput("invalid key_scope", problems=[Problem(
            None, "key_scope", f"one of {', '.join(SCOPES)}")])
    return scope


def _body_int(key: str) -> int | None:
    """The 100 bits of a key minted by ``mint_key``; None for any other string."""
    if not key.startswith(KEY_PREFIX) or len(key) != len(KEY_PREFIX) + _BODY:
        return None
    n = 0
    for c in key[len(KEY_PREFIX):]:
        d = _DIGIT.get(c)
        if d is None:
            return None
        n = (n << 5) | d
    return n


def _key_of(n: int) -> str:
    return KEY_PREFIX + "".join(_ALPHABET[(n >> (5 * (_BODY - 1 - i))) & 31] for i in range(_BODY))


class KeyScopes:
    """Which agencies see scoped keys, and the translation between master and scoped keys."""

    def __init__(self, secret: bytes, scopes: Mapping[str, str]) -> None:
        if len(secret) < 32:
            raise InvalidInput("the key-scope secret is shorter than 32 bytes")
        self._secret = secret
        self._scopes = dict(scopes)
        self._round_keys: dict[str, bytes] = {}
        self._lock = threading.Lock()

    # ---- the setting ----------------------------------------------------------------
    def scope(self, agency: str) -> str:
        """The agency's key scope (``shared`` unless set)."""
        return self._scopes.get(agency, SHARED)

    def is_scoped(self, agency: str | None) -> bool:
        """Whether the agency sees agency-scoped keys."""
        return agency is not None and self._scopes.get(agency) == AGENCY

    def remember(self, agency: str, scope: str) -> None:
        """Note a scope committed to the registry (call after the transaction)."""
        with self._lock:
            self._scopes[agency] = check_scope(scope)

    # ---- the permutation ------------------------------------------------------------
    def _agency_key(self, agency: str) -> bytes:
        k = self._round_keys.get(agency)
        if k is None:
            k = hmac.digest(self._secret, _LABEL + agency.encode(), "sha256")
            with self._lock:
                self._round_keys[agency] = k
        return k

    @staticmethod
    def _f(key: bytes, rnd: int, half: int) -> int:
        h = hashlib.blake2b(half.to_bytes(7, "big"), key=key, digest_size=8,
                            person=b"mpi-scope" + bytes([rnd]))
        return int.from_bytes(h.digest(), "big") & _MASK

    def to_agency(self, agency: str, master_key: str) -> str:
        """The agency's scoped key of a master key (stable; unlinkable without the secret)."""
        n = _body_int(master_key)
        key = self._agency_key(agency)
        if n is None:  # not minted by mint_key (none in a real registry): one-way only
            d = hmac.digest(key, master_key.encode(), "sha256")
            return _key_of(int.from_bytes(d[:13], "big") >> 4)
        left, right = n >> _HALF, n & _MASK
        for rnd in range(_ROUNDS):
            left, right = right, left ^ self._f(key, rnd, right)
        return _key_of((left << _HALF) | right)

    def to_master(self, agency: str, scoped_key: str) -> str | None:
        """The master key a scoped key of this agency stands for (None: not a key's form).
        Whether that master key exists is the caller's question."""
        n = _body_int(scoped_key)
        if n is None:
            return None
        key = self._agency_key(agency)
        left, right = n >> _HALF, n & _MASK
        for rnd in reversed(range(_ROUNDS)):
            left, right = right ^ self._f(key, rnd, left), left
        return _key_of((left << _HALF) | right)

    # ---- what a scoped agency is told --------------------------------------------------
    def view_results(self, agency: str, results: Sequence[RecordResult],
                     held: Callable[[list[str]], Mapping[str, int]]) -> list[RecordResult]:
        """Results as the scoped agency sees them: its scoped keys, and ``new``/``linked``
        judged only by its own active records (``held``: master key -> the agency's active
        records on it now, after the write); ``review`` (a near match, maybe with another
        agency's person) becomes one of those two as well."""
        keys = sorted({r.person_key for r in results if r.person_key})
        now = dict(held(keys)) if keys else {}
        joining: dict[str, int] = {}
        for r in results:
            if r.person_key and r.outcome in _JOINING:
                joining[r.person_key] = joining.get(r.person_key, 0) + 1
        before = {k: now.get(k, 0) - joining.get(k, 0) for k in keys}
        out = []
        for r in sorted(results, key=lambda r: r.row):
            outcome = r.outcome
            if r.person_key and outcome in _JOINING:
                outcome = "linked" if before[r.person_key] > 0 else "new"
                before[r.person_key] += 1
            key = self.to_agency(agency, r.person_key) if r.person_key else None
            out.append(RecordResult(r.row, r.source_record_id, key, outcome))
        return out


def resolve(scopes: KeyScopes, cur: duckdb.DuckDBPyConnection, agency: str, key: str) -> str:
    """The master key an agency names with ``key`` (its scoped key when it is scoped), when
    the agency holds the person: an active record on the key or, for a retired key, on one of
    its active successors. NotFound otherwise, the same for a key that does not exist and a
    person held only by other agencies."""
    master = scopes.to_master(agency, key) if scopes.is_scoped(agency) else key
    row = pstore.find_person(cur, master) if master is not None else None
    if row is None or master is None:
        raise NotFound(NO_SUCH_PERSON)
    current = [master] if row["status"] == "active" else \
        (pstore.active_successors(cur, master) or [master])
    if not pstore.agency_record_counts(cur, current, agency=agency):
        raise NotFound(NO_SUCH_PERSON)
    return master


def held_counts(registry: Registry, agency: str, master_keys: Sequence[str]) -> dict[str, int]:
    """master key -> the agency's active records on it now (keys without any left out), from
    the match state in memory: no read of the registry file, so no fold of the journal."""
    with registry.store.write_lock:
        st = registry.state
        labels = {st.person_of[k]: k for k in master_keys if k in st.person_of}
        counts = st.agency_record_counts(agency, list(labels))
    return {labels[lab]: n for lab, n in counts.items()}
