"""Project pseudonyms and per-person date shifts for research extracts.

Owns: the one-way map from a person key to the id a research project sees (keyed HMAC-SHA256
under a random secret that belongs to that project only) and the per-person date shift derived
from the same secret in a separate HMAC domain. Must not: store, log or return the project
secret or a person key; take randomness from anywhere but ``new_project_secret``.

Two projects have independent 256-bit secrets, so their pseudonyms cannot be joined; the same
secret and key always give the same pseudonym, so a rebuild within a project reproduces ids.
Destroying the secret (closing the project) makes the map unrecoverable.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from mpi.errors import InvalidInput

PROJECT_SECRET_BYTES = 32
PSEUDONYM_PREFIX = "p_"
PSEUDONYM_BYTES = 15   # 120 bits = 24 base32 characters; collisions: ~4e-25 at 10^6 persons
_B32 = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz234567", dtype=np.uint8)
DEFAULT_MAX_SHIFT_DAYS = 182
# Domain labels: the pseudonym and the shift are HMACs under different derived keys, so the
# shift of a person says nothing about their pseudonym and vice versa.
_PSEUDONYM_DOMAIN = b"mpi/extract/pseudonym/v1"
_SHIFT_DOMAIN = b"mpi/extract/date-shift/v1"


def new_project_secret() -> bytes:
    """Return a fresh project secret: 32 bytes from the operating system's CSPRNG."""
    return secrets.token_bytes(PROJECT_SECRET_BYTES)


def _subkey(secret: bytes, domain: bytes) -> bytes:
    if not isinstance(secret, bytes | bytearray) or len(secret) < 16:
        raise InvalidInput("project secret must be at least 16 bytes")
    return hmac.digest(bytes(secret), domain, hashlib.sha256)


def _keys(person_keys: Sequence[str] | pa.Array | pa.ChunkedArray) -> tuple[list[str], pa.Array]:
    """Distinct keys and, for each input position, the index of its key among them."""
    arr = person_keys if isinstance(person_keys, pa.Array | pa.ChunkedArray) else pa.array(
        list(person_keys), type=pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        raise InvalidInput("person keys must be strings")
    if arr.null_count:
        raise InvalidInput("person keys must not be null")
    encoded = pc.dictionary_encode(arr)
    return encoded.dictionary.to_pylist(), encoded.indices


def _digests(key: bytes, distinct: list[str]) -> npt.NDArray[np.uint8]:
    """HMAC-SHA256 of every distinct key, as an (n, 32) byte matrix."""
    blob = b"".join([hmac.digest(key, k.encode(), hashlib.sha256) for k in distinct])
    return np.frombuffer(blob, dtype=np.uint8).reshape(len(distinct), 32)


def _strings(chars: npt.NDArray[np.uint8]) -> pa.Array:
    """An Arrow string array from an (n, width) matrix of ASCII bytes."""
    n, width = chars.shape
    offsets = np.arange(0, width * (n + 1), width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def pseudonymize(person_keys: Sequence[str] | pa.Array | pa.ChunkedArray, secret: bytes) -> pa.Array:
    """Project pseudonyms ("p_" + 24 base32 characters), one per input key, same order."""
    key = _subkey(secret, _PSEUDONYM_DOMAIN)
    distinct, idx = _keys(person_keys)
    bits = np.unpackbits(_digests(key, distinct)[:, :PSEUDONYM_BYTES], axis=1)
    groups = bits.reshape(len(distinct), PSEUDONYM_BYTES * 8 // 5, 5) @ np.array([16, 8, 4, 2, 1], np.uint8)
    chars = np.empty((len(distinct), 2 + groups.shape[1]), dtype=np.uint8)
    chars[:, :2] = np.frombuffer(PSEUDONYM_PREFIX.encode(), dtype=np.uint8)
    chars[:, 2:] = _B32[groups]
    return pc.take(_strings(chars), idx)


def _uniform_nonzero(digests: npt.NDArray[np.uint8], max_days: int) -> npt.NDArray[np.int32]:
    """Map each 32-byte digest to a uniform integer in [-max_days, max_days] without 0.

    The first of the digest's four 64-bit words below the largest multiple of 2*max_days is
    used (rejection sampling keeps the draw exactly uniform); all four are rejected with
    probability below (2*max_days / 2**64)**4, and then the first word is used anyway.
    """
    n = 2 * max_days
    words = digests.view(">u8").astype(np.uint64)          # (rows, 4)
    rest = (1 << 64) % n
    first_ok = (np.argmax(words < np.uint64((1 << 64) - rest), axis=1) if rest
                else np.zeros(len(words), dtype=np.intp))
    chosen = words[np.arange(len(words)), first_ok]
    r = (chosen % np.uint64(n)).astype(np.int64)
    shifted: npt.NDArray[np.int32] = np.where(r < max_days, r - max_days, r - max_days + 1).astype(np.int32)
    return shifted


def date_shift_days(person_keys: Sequence[str] | pa.Array | pa.ChunkedArray, secret: bytes, *,
                    max_days: int = DEFAULT_MAX_SHIFT_DAYS) -> pa.Array:
    """Per-person date shift in days (int32), uniform in [-max_days, max_days] excluding 0."""
    if not isinstance(max_days, int) or not 1 <= max_days <= 3650:
        raise InvalidInput("max_days must be an integer from 1 to 3650")
    key = _subkey(secret, _SHIFT_DOMAIN)
    distinct, idx = _keys(person_keys)
    shifts = _uniform_nonzero(_digests(key, distinct), max_days)
    return pc.take(pa.array(shifts, type=pa.int32()), idx)
