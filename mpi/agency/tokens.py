"""Keyed tokens: agency-side HMAC tokens and the service's re-keying of them.

Owns: the token algorithm of the linkage schema, linkage key ids, the server re-key that
turns an agency token into a 64-bit storage token, and the similarity tokens (keyed 64-bit
Bloom filters of a name's letter pairs) with the server's keyed bit permutation of them.
Pure: no I/O, no clock, no environment; secrets come in as bytes. Must not: log or put a
token or secret into an error message.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
import secrets as _secrets
from collections.abc import Mapping

from mpi.agency.schema import SCHEMA_VERSION, SIMILARITY_TOKENS, token_domain
from mpi.errors import InvalidInput

SECRET_BYTES = 32
_KEY_ID_LABEL = b"mpi-key-id/v1\x00"
_DIGEST_B64_LEN = 43  # 32 bytes, base64url without padding
_URLSAFE = bytes.maketrans(b"+/", b"-_")
_hmac_digest = hmac.digest
_KEY_ID = re.compile(r"[0-9a-f]{8}")
_URLSAFE_TO_STD = bytes.maketrans(b"-_", b"+/")
_B64URL = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")


def new_secret() -> bytes:
    """A fresh 256-bit random linkage secret."""
    return _secrets.token_bytes(SECRET_BYTES)


def key_id(secret: bytes) -> str:
    """The public id of a secret: 8 hex digits that reveal nothing about it."""
    return hashlib.sha256(_KEY_ID_LABEL + secret).hexdigest()[:8]


def _message_prefix(name: str, *, schema_version: int) -> bytes:
    return f"mpi/v{schema_version}/{token_domain(name)}".encode() + b"\x00"


_b2a = binascii.b2a_base64


class TokenMaker:
    """Makes tokens under one secret, with a memo of recent (name, value) -> token."""

    def __init__(self, secret: bytes, *, kid: str, schema_version: int = SCHEMA_VERSION,
                 memo: int = 500_000) -> None:
        self._secret = secret
        self._head = kid + ":"
        self._schema_version = schema_version
        self._prefixes: dict[str, bytes] = {}
        self._memo: dict[tuple[str, str], str] = {}
        self._memo_max = memo
        self._pair_bits: dict[tuple[bytes, str], int] = {}  # (domain prefix, letter pair) -> bits
        self._part_bits: dict[tuple[bytes, str], int] = {}  # (domain prefix, one name) -> bits

    def __call__(self, name: str, value: str) -> str:
        """The token of one normalized value (a Bloom filter for a similarity token)."""
        if name in SIMILARITY_TOKENS:
            return self.bloom(name, value)
        prefix = self._prefixes.get(name) or self._prefix(name)
        if name in _UNIQUE:  # a memo of values nearly every person has alone only churns
            return self._make(prefix, value)
        key = (name, value)
        tok = self._memo.get(key)
        if tok is not None:
            return tok
        tok = self._make(prefix, value)
        if len(self._memo) >= self._memo_max:
            self._memo.clear()
        self._memo[key] = tok
        return tok

    def _make(self, prefix: bytes, value: str) -> str:
        digest = _hmac_digest(self._secret, prefix + value.encode(), "sha256")
        return self._head + _b2a(digest, newline=False)[:_DIGEST_B64_LEN].translate(
            _URLSAFE).decode()

    def _prefix(self, name: str) -> bytes:
        prefix = self._prefixes.get(name)
        if prefix is None:
            prefix = self._prefixes[name] = _message_prefix(
                name, schema_version=self._schema_version)
        return prefix

    def bloom(self, name: str, value: str) -> str:
        """The similarity token of a normalized name: a 64-bit Bloom filter of its letter pairs
        (the name padded with '_' at both ends), BLOOM_HASHES bits per pair at positions taken
        from the pair's HMAC, as 8 bytes followed by 24 zero bytes. A value of several
        '|'-separated names (the unordered name pair) pads each name on its own: the filter is
        the union of the names' pairs, whatever their order."""
        key = (name, value)
        memo = name not in _UNIQUE  # a memo of (nearly) one person's own values only churns
        tok = self._memo.get(key) if memo else None
        if tok is not None:
            return tok
        prefix = self._prefix(name)
        bits = 0
        for part in value.split("|"):
            bits |= self._part_bits.get((prefix, part)) or self._filter(prefix, part)
        raw = bits.to_bytes(8, "little") + bytes(24)
        tok = self._head + _b2a(raw, newline=False)[:_DIGEST_B64_LEN].translate(_URLSAFE).decode()
        if memo:
            if len(self._memo) >= self._memo_max:
                self._memo.clear()
            self._memo[key] = tok
        return tok


    def _filter(self, prefix: bytes, part: str) -> int:
        """The filter bits of one name padded with '_' (memoized: a name recurs in many
        records, while the name pair it is part of is nearly unique)."""
        bits = 0
        pairs = self._pair_bits
        padded = f"_{part}_"
        for i in range(len(padded) - 1):
            pair = (prefix, padded[i:i + 2])
            mask = pairs.get(pair)
            if mask is None:  # a few thousand letter pairs per domain: HMAC each once
                digest = _hmac_digest(self._secret, prefix + pair[1].encode(), "sha256")
                mask = 0
                for k in range(BLOOM_HASHES):
                    mask |= 1 << (digest[k] & 63)
                if len(pairs) >= 1 << 16:
                    pairs.clear()
                pairs[pair] = mask
            bits |= mask
        if len(self._part_bits) >= 1 << 17:
            self._part_bits.clear()
        self._part_bits[(prefix, part)] = bits
        return bits


BLOOM_HASHES = 2  # bits set per letter pair in a similarity token
# Tokens whose values are (nearly) one person's own: the TokenMaker memo skips them.
_UNIQUE = frozenset({"national_id", "family_name.name_set", "family_name.name_set_bloom",
                     "address_line", "phone", "email",
                     *(f"national_id.mask{i}" for i in range(1, 8))})


def make_token(secret: bytes, name: str, value: str, *, kid: str,
               schema_version: int = SCHEMA_VERSION) -> str:
    """HMAC-SHA256 token of one normalized value, domain-separated by schema, field, variant."""
    return TokenMaker(secret, kid=kid, schema_version=schema_version, memo=0)(name, value)


def tokenize_values(secret: bytes, values: Mapping[str, str], *, kid: str) -> dict[str, str]:
    """Token for each (token name -> normalized value)."""
    return {name: make_token(secret, name, value, kid=kid) for name, value in values.items()}


def split_token(token: str) -> tuple[str, bytes]:
    """Parse ``kid:digest`` into its key id and 32 digest bytes; raise InvalidInput if malformed."""
    kid, sep, b64 = token.partition(":")
    if (not sep or len(b64) != _DIGEST_B64_LEN or not _KEY_ID.fullmatch(kid)
            or not _B64URL.fullmatch(b64)):
        raise InvalidInput("malformed token: expected '<8 hex key id>:<43 base64url characters>'")
    # The pattern above admits only base64url characters: decode them directly (the base64
    # module's wrapper costs several times the decode itself on the ingest path).
    return kid, binascii.a2b_base64(b64.encode("ascii").translate(_URLSAFE_TO_STD) + b"=")


def rekey(server_secret: bytes, digest: bytes) -> int:
    """The storage token: keyed BLAKE2b of the agency digest, as a non-zero signed 64-bit int."""
    value = int.from_bytes(
        hashlib.blake2b(digest, key=server_secret, digest_size=8).digest(), "little", signed=True
    )
    return value or 1


class BloomPermutation:
    """The server's keyed permutation of a similarity token's 64 bits.

    Stored similarity tokens must not be the agency's own (joinable with its token files), yet
    must keep their letter-pair overlap: a permutation of bit positions (of the 8 bytes, and of
    the bits within a byte) keeps every count the comparison uses and hides the agency's value.
    """

    def __init__(self, server_secret: bytes) -> None:
        seed = hashlib.blake2b(b"mpi-bloom-permutation/v1", key=server_secret).digest()
        self._bytes = _keyed_shuffle(list(range(8)), seed[:16])
        bit_order = _keyed_shuffle(list(range(8)), seed[16:32])
        self._table = bytes(sum(((b >> i) & 1) << bit_order[i] for i in range(8))
                            for b in range(256))

    def __call__(self, digest: bytes) -> int:
        """The stored 64-bit value of a similarity token's digest; InvalidInput if malformed."""
        if any(digest[8:]):
            raise InvalidInput("malformed similarity token: expected 8 filter bytes and 24 zero "
                               "bytes")
        moved = bytes(digest[p] for p in self._bytes).translate(self._table)
        value = int.from_bytes(moved, "little", signed=True)
        if value == 0:
            raise InvalidInput("malformed similarity token: empty filter")
        return value


def _keyed_shuffle(items: list[int], key: bytes) -> list[int]:
    """Fisher-Yates shuffle driven by a keyed hash stream (deterministic for a key)."""
    out = list(items)
    for i in range(len(out) - 1, 0, -1):
        r = int.from_bytes(hashlib.blake2b(i.to_bytes(2, "little"), key=key, digest_size=8)
                           .digest(), "little")
        j = r % (i + 1)
        out[i], out[j] = out[j], out[i]
    return out
