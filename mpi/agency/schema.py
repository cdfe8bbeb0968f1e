"""The linkage schema (token contract) v1, published as data.

Owns: the list of identifier fields, their derived variants, the token names and the minimum
evidence a record needs. Must not: normalize, hash or do I/O (see normalize.py and tokens.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 1
# Revisions of contract v1 add optional tokens only: a record from an earlier tokenizer stays
# valid (its new tokens are simply absent). Stored token lists keep the positions of earlier
# revisions; tokens a revision adds are appended after them (TOKEN_NAMES).
CONTRACT_REVISION = 3
_MASKED_DATE = "YYYYMMDD"


@dataclass(frozen=True)
class Variant:
    """A derived form of a field that is tokenized alongside the full value."""

    name: str
    description: str
    since: int = 1  # the contract revision that added it


@dataclass(frozen=True)
class Field:
    """One identifier field of the contract."""

    name: str
    description: str
    normalization: str
    variants: tuple[Variant, ...] = ()


FULL = Variant("full", "the normalized value itself")
_ORDINAL = {1: "first", 2: "second", 3: "third"}
_BLOOM = ("similarity token: a 64-bit Bloom filter of the letter pairs of the value padded "
          "with '_' (2 bits per pair, at positions from the pair's HMAC digest bytes 0 and 1, "
          "mod 64); the token's 32 bytes are the 8 filter bytes, little-endian, then 24 zero "
          "bytes. The service compares its bits (Dice coefficient), not its equality")

FIELDS: tuple[Field, ...] = (
    Field("given_name", "first / given name",
          "Unicode folded to ASCII, upper case, punctuation removed, titles (MR, DR...) and "
          "suffixes (JR, III...) removed; placeholders (UNKNOWN, BABY BOY...) are missing",
          (FULL, Variant("phonetic", "NYSIIS code"), Variant("prefix3", "first 3 letters"),
           Variant("nickname", "nickname-canonical form (BOB -> ROBERT); superseded by nick1-3"),
           *(Variant(f"nick{i}", f"nickname group {i}: the {_ORDINAL[i]} most common formal "
                     "name the first word may stand for (the word itself when it has nicknames "
                     "or none is known); nick1-3 share one domain", since=2) for i in (1, 2, 3)),
           Variant("bloom", _BLOOM, since=2))),
    Field("middle_name", "middle name(s)", "as given_name",
          (FULL, Variant("initial", "first letter"))),
    Field("family_name", "family / last name",
          "as given_name; hyphens and spaces separate parts; apostrophes dropped",
          (FULL, Variant("phonetic", "NYSIIS code of the whole name"),
           Variant("prefix3", "first 3 letters"),
           Variant("part1", "first part of a compound name (the whole name if single)"),
           Variant("part2", "second part of a compound name"),
           Variant("part3", "third part of a compound name"),
           Variant("name_set", "given and family name as an unordered pair: the two "
                   "normalized names sorted and joined by '|' (swapped names agree); present "
                   "only when both names are", since=2),
           Variant("bloom", _BLOOM, since=2),
           Variant("name_set_bloom", "name-order-free similarity token: a 64-bit Bloom filter "
                   "of the letter pairs of BOTH names, each padded with '_' on its own (the "
                   "union of the given name's and the family name's pairs, so it does not "
                   "depend on their order; filter bits as for the other similarity tokens, "
                   "the value hashed being name_set's 'A|B'); present only when both names "
                   "are. Swapped names with a typo stay similar", since=3))),
    Field("date_of_birth", "date of birth",
          "ISO 8601 YYYY-MM-DD (other formats only when declared); 1900-01-01 and similar "
          "placeholders are missing",
          (FULL, Variant("swap", "the date with day and month swapped, when valid"),
           Variant("year_month", "YYYY-MM"), Variant("month_day", "MM-DD"),
           Variant("year_day", "YYYY-DD"), Variant("year", "YYYY"),
           *(Variant(f"mask{i}", f"the date as {_MASKED_DATE} with digit {i} "
                     f"({_MASKED_DATE[i - 1]}) replaced by '_' (a one-digit typo agrees on a "
                     "mask)", since=2)
             for i in range(1, 9)))),
    Field("sex", "administrative sex", "M, F or X; U/UNKNOWN are missing", (FULL,)),
    Field("national_id", "national identifier such as a US SSN",
          "9 digits; impossible or placeholder SSNs (000-00-0000, 123-45-6789, 9xx...) are "
          "missing", (FULL, Variant("last4", "last 4 digits"),
                      *(Variant(f"mask{i}", f"the 9 digits with digits {i} and {i + 1} "
                                "replaced by '__' (a one-digit typo or two swapped neighbouring "
                                "digits in the first 8 agree on a mask; none masks the last "
                                "digit, where twins' sequential numbers differ)", since=2)
                        for i in range(1, 8)))),
    Field("postal_code", "postal / ZIP code", "first 5 digits; 00000 is missing",
          (FULL, Variant("zip3", "first 3 digits"))),
    Field("address_line", "street address line",
          "folded, upper case, punctuation removed, USPS street suffixes and directions "
          "abbreviated", (FULL, Variant("bloom", _BLOOM, since=2))),
    Field("city", "city or town", "folded, upper case, punctuation removed", (FULL,)),
    Field("phone", "telephone number",
          "digits only, leading country code 1 removed from 11-digit numbers; 7-15 digits",
          (FULL,)),
    Field("email", "email address", "trimmed and lower-cased; must contain one @", (FULL,)),
)

FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
_BY_NAME = {f.name: f for f in FIELDS}


def token_name(field: str, variant: str) -> str:
    """The token's name in tokenized records: ``field`` or ``field.variant``."""
    return field if variant == "full" else f"{field}.{variant}"


def column_name(name: str) -> str:
    """The storage / model column for a token name (``given_name.phonetic`` -> ``given_name_phonetic``)."""
    return name.replace(".", "_")


TOKEN_NAMES: tuple[str, ...] = tuple(
    token_name(f.name, v.name)
    for rev in range(1, CONTRACT_REVISION + 1) for f in FIELDS for v in f.variants if v.since == rev
)
TOKEN_COLUMNS: tuple[str, ...] = tuple(column_name(n) for n in TOKEN_NAMES)

# Variants compared against each other share one HMAC domain, so equal values give equal
# tokens: the swapped date against the full date, and compound name parts against each other.
SHARED_DOMAINS: dict[str, str] = {
    "date_of_birth.swap": "date_of_birth/full",
    "family_name.part1": "family_name/part",
    "family_name.part2": "family_name/part",
    "family_name.part3": "family_name/part",
    "given_name.nick1": "given_name/nickgroup",
    "given_name.nick2": "given_name/nickgroup",
    "given_name.nick3": "given_name/nickgroup",
}


# Tokens compared by similarity of their bits, not equality: the service keeps their bits
# (permuted under its own key) instead of re-keying them.
SIMILARITY_TOKENS = frozenset({"given_name.bloom", "family_name.bloom", "address_line.bloom",
                               "family_name.name_set_bloom"})


def token_domain(name: str) -> str:
    """The ``field/variant`` domain a token name is hashed under."""
    field, _, variant = name.partition(".")
    return SHARED_DOMAINS.get(name, f"{field}/{variant or 'full'}")

# Groups of evidence: a record must have at least MIN_EVIDENCE of them to be linkable.
EVIDENCE_GROUPS: dict[str, tuple[str, ...]] = {
    "name": ("given_name", "family_name"),
    "date_of_birth": ("date_of_birth",),
    "national_id": ("national_id",),
    "address": ("address_line", "postal_code"),
    "phone": ("phone",),
    "email": ("email",),
}
MIN_EVIDENCE = 2


def get_field(name: str) -> Field:
    """Return the field definition or raise KeyError."""
    return _BY_NAME[name]


_GROUP_OF = {f: g for g, fs in EVIDENCE_GROUPS.items() for f in fs}
_GROUP_ORDER = {g: i for i, g in enumerate(EVIDENCE_GROUPS)}


def evidence_groups_present(present_fields: set[str]) -> list[str]:
    """Which evidence groups a record with these non-missing fields covers."""
    groups = {_GROUP_OF[f] for f in present_fields if f in _GROUP_OF}
    return sorted(groups, key=_GROUP_ORDER.__getitem__)


def schema_document() -> dict[str, Any]:
    """The contract as JSON-ready data (what ``mpi schema`` and ``GET /v1/schema`` publish)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "contract_revision": CONTRACT_REVISION,
        "token": {
            "algorithm": "HMAC-SHA256",
            "message": "b'mpi/v{schema_version}/{domain}' + 0x00 + utf8(normalized value)",
            "domain": "{field}/{variant}, except these shared domains: "
                      + ", ".join(f"{k} -> {v}" for k, v in SHARED_DOMAINS.items()),
            "format": "{key_id}:{base64url(digest) without padding}",
            "key_id": "first 8 hex digits of SHA-256(b'mpi-key-id/v1' + 0x00 + secret)",
            "similarity_tokens": {
                "names": sorted(SIMILARITY_TOKENS),
                "digest": "instead of the HMAC: a 64-bit Bloom filter of the value's letter "
                          "pairs; for each pair of '_' + part + '_' of every '|'-separated part "
                          "of the value (one part but for name_set_bloom), d = HMAC-SHA256(secret, "
                          "b'mpi/v{schema_version}/{domain}' + 0x00 + utf8(pair)) sets bits "
                          "d[0] mod 64 and d[1] mod 64; digest = the 8 filter bytes "
                          "(little-endian) + 24 zero bytes",
            },
        },
        "record": {
            "source_record_id": "required, unique per agency, 1-128 printable characters",
            "schema_version": f"integer, must be {SCHEMA_VERSION}",
            "tokens": "object: token name -> token; missing values are simply absent",
            "attributes": "optional object of non-identifying attributes (string/number/bool)",
            "research_consent": "optional boolean; false means the person opted out of research",
        },
        "minimum_evidence": {
            "groups": {k: list(v) for k, v in EVIDENCE_GROUPS.items()},
            "at_least": MIN_EVIDENCE,
        },
        "fields": [
            {
                "name": f.name,
                "description": f.description,
                "normalization": f.normalization,
                "tokens": [
                    {"name": token_name(f.name, v.name), "variant": v.name,
                     "description": v.description, "since_revision": v.since}
                    for v in f.variants
                ],
            }
            for f in FIELDS
        ],
    }
