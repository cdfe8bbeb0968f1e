"""Validation and server re-keying of tokenized records as agencies send them.

Owns: checking each incoming token record against the schema (row, field and reason for every
problem) and turning its tokens into 64-bit storage tokens under the server secret. Pure apart
from the secret passed in: no I/O. Must not: echo a token or secret in a message.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from mpi.agency.schema import EVIDENCE_GROUPS, MIN_EVIDENCE, SCHEMA_VERSION, SIMILARITY_TOKENS, TOKEN_NAMES
from mpi.agency.tokenizer import MAX_SOURCE_ID_LEN
from mpi.agency.tokens import BloomPermutation, rekey, split_token
from mpi.errors import InvalidInput, Problem

_TOKEN_POS = {name: i for i, name in enumerate(TOKEN_NAMES)}
_MAX_ATTRIBUTES = 64
# Re-keying is deterministic, and token values repeat (names, dates, ZIPs): a bounded memo of
# valid tokens -> (key id, storage token) skips parsing and hashing for repeats.
_CACHES: dict[bytes, dict[str, tuple[str, int]]] = {}
_PERMUTATIONS: dict[bytes, BloomPermutation] = {}
_CACHE_MAX = 1 << 18
_FIELD_SET = frozenset(name for name in TOKEN_NAMES if "." not in name)
# More evidence-group fields than the largest group has means at least two groups.
_GROUPED = frozenset(f for fs in EVIDENCE_GROUPS.values() for f in fs)
_ENOUGH_FIELDS = max(len(fs) for fs in EVIDENCE_GROUPS.values()) + 1


@dataclass(frozen=True)
class ParsedRecord:
    """A validated, re-keyed record ready for the registry."""

    row: int
    source_record_id: str
    key_id: str
    tokens: npt.NDArray[np.int64]     # one int64 per TOKEN_NAMES entry, 0 = missing
    attributes: str | None            # canonical JSON or None
    research_consent: bool | None
    content_hash: int


def _content_hash(tokens: npt.NDArray[np.int64], attributes: str | None,
                  consent: bool | None) -> int:
    h = hashlib.blake2b(tokens.tobytes(), digest_size=8)
    h.update((attributes or "").encode())
    h.update(b"\x00" + str(consent).encode())
    return int.from_bytes(h.digest(), "little", signed=True)


def with_consent(record: ParsedRecord, consent: bool) -> ParsedRecord:
    """The record with the research consent a refresh without the field keeps (its stored
    one), and the content hash that goes with it."""
    return replace(record, research_consent=consent,
                   content_hash=_content_hash(record.tokens, record.attributes, consent))


def _check_attributes(value: Any, row: int, sid: str | None, problems: list[Problem]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        problems.append(Problem(row, "attributes", "must be an object", sid))
        return None
    if len(value) > _MAX_ATTRIBUTES:
        problems.append(Problem(row, "attributes", f"at most {_MAX_ATTRIBUTES} attributes", sid))
        return None
    for k, v in value.items():
        if not isinstance(k, str) or not k.isidentifier():
            problems.append(Problem(row, "attributes", "attribute names must be identifiers", sid))
            return None
        if v is not None and not isinstance(v, str | int | float | bool):
            problems.append(Problem(row, f"attributes.{k}", "must be a string, number or "
                                    "boolean", sid))
            return None
    return json.dumps(dict(sorted(value.items())), separators=(",", ":")) if value else None


def _check_envelope(obj: Mapping[str, Any], row: int, problems: list[Problem]
                    ) -> tuple[str | None, Mapping[str, Any], Any, str | None]:
    """The record's source id, tokens object, consent and attributes, problems noted."""
    sid_raw = obj.get("source_record_id")
    sid = sid_raw.strip() if isinstance(sid_raw, str) else None
    if not sid or len(sid) > MAX_SOURCE_ID_LEN or not sid.isprintable():
        problems.append(Problem(row, "source_record_id",
                                f"required: 1-{MAX_SOURCE_ID_LEN} printable characters"))
        sid = None
    version = obj.get("schema_version")
    if version != SCHEMA_VERSION:
        problems.append(Problem(row, "schema_version", f"unknown schema version {version!r}; "
                                f"this service speaks version {SCHEMA_VERSION}", sid))
    raw_tokens = obj.get("tokens")
    if not isinstance(raw_tokens, Mapping) or not raw_tokens:
        problems.append(Problem(row, "tokens", "must be a non-empty object", sid))
        raw_tokens = {}
    consent = obj.get("research_consent")
    if consent is not None and not isinstance(consent, bool):
        problems.append(Problem(row, "research_consent", "must be true, false or absent", sid))
    attributes = _check_attributes(obj.get("attributes"), row, sid, problems)
    unknown = set(obj) - {"source_record_id", "schema_version", "tokens", "attributes",
                          "research_consent"}
    if unknown:
        problems.append(Problem(row, sorted(unknown)[0], "unknown property", sid))
    return sid, raw_tokens, consent, attributes


def _rekey(name: str, tok: str, server_secret: bytes) -> tuple[str, int]:
    """(key id, storage token) of one agency token; InvalidInput when malformed."""
    kid, digest = split_token(tok)
    if name in SIMILARITY_TOKENS:  # its bits are compared: permute, don't hash
        perm = _PERMUTATIONS.get(server_secret)
        if perm is None:
            perm = _PERMUTATIONS[server_secret] = BloomPermutation(server_secret)
        return kid, perm(digest)
    return kid, rekey(server_secret, digest)


def _rekey_tokens(raw_tokens: Mapping[str, Any], *, row: int, sid: str | None,
                  server_secret: bytes, problems: list[Problem]
                  ) -> tuple[list[int], set[str], list[str]]:
    """Storage token per position, the key ids seen and the token names sent as null."""
    values = [0] * len(TOKEN_NAMES)
    kids: set[str] = set()
    first_kid: str | None = None
    absent: list[str] = []
    cache = _CACHES.setdefault(server_secret, {})
    pos_of, cached = _TOKEN_POS.get, cache.get
    for name, tok in raw_tokens.items():
        pos = pos_of(name) if type(name) is str else None
        if pos is None:
            problems.append(Problem(row, f"tokens.{name}", "unknown token name", sid))
            continue
        hit = cached(tok) if type(tok) is str else None
        if hit is None:
            if tok is None:
                absent.append(name)
                continue
            if not isinstance(tok, str):
                problems.append(Problem(row, f"tokens.{name}", "must be a string", sid))
                continue
            try:
                hit = _rekey(name, tok, server_secret)
            except InvalidInput as exc:
                problems.append(Problem(row, f"tokens.{name}", exc.message, sid))
                continue
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            cache[tok] = hit
        if hit[0] != first_kid:
            kids.add(hit[0])
            first_kid = first_kid or hit[0]
        values[pos] = hit[1]
    return values, kids, absent


def parse_record(obj: Any, *, row: int, server_secret: bytes,
                 accepted_key_ids: Iterable[str] | None) -> ParsedRecord | list[Problem]:
    """Validate one token record; return it re-keyed, or the list of its problems."""
    if not isinstance(obj, Mapping):
        return [Problem(row, None, "record must be a JSON object")]
    problems: list[Problem] = []
    sid, raw_tokens, consent, attributes = _check_envelope(obj, row, problems)
    values, kids, absent = _rekey_tokens(raw_tokens, row=row, sid=sid,
                                         server_secret=server_secret, problems=problems)
    present = raw_tokens.keys() & _FIELD_SET
    if absent:
        present -= set(absent)
    tokens = np.array(values, dtype=np.int64)
    if len(kids) > 1:
        problems.append(Problem(row, "tokens", "tokens made under more than one linkage key", sid))
    kid = next(iter(kids)) if kids else ""
    accepted = accepted_key_ids if accepted_key_ids is None or isinstance(
        accepted_key_ids, set | frozenset) else set(accepted_key_ids)
    if len(kids) == 1 and accepted is not None and kid not in accepted:
        problems.append(Problem(row, "tokens", f"unknown linkage key id {kid!r}; accepted: "
                                f"{sorted(accepted)}", sid))
    groups = [g for g, fs in EVIDENCE_GROUPS.items() if any(f in present for f in fs)] \
        if len(present & _GROUPED) < _ENOUGH_FIELDS else list(EVIDENCE_GROUPS)
    if not problems and len(groups) < MIN_EVIDENCE:
        problems.append(Problem(row, "tokens", f"too little to link on: has {groups or 'nothing'}"
                                f", needs at least {MIN_EVIDENCE} evidence groups", sid))
    if problems:
        return problems
    assert sid is not None
    return ParsedRecord(row, sid, kid, tokens, attributes, consent,
                        _content_hash(tokens, attributes, consent))
