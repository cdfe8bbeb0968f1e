"""Tests for mpi.identity.intake.parse_record: validation and server re-keying of token records."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest

from mpi.agency.schema import SCHEMA_VERSION, SIMILARITY_TOKENS, TOKEN_NAMES
from mpi.agency.tokenizer import Tokenizer
from mpi.agency.tokens import BloomPermutation, key_id, rekey, split_token
from mpi.errors import Problem
from mpi.identity.intake import ParsedRecord, parse_record

AGENCY_SECRET = bytes(range(32))
OTHER_AGENCY_SECRET = bytes(range(50, 82))
SERVER_SECRET = b"server-secret-".ljust(32, b"!")
KID = key_id(AGENCY_SECRET)

PLAIN = {"source_record_id": "rec-1", "given_name": "Robert", "family_name": "Garcia-Lopez",
         "date_of_birth": "1980-03-04", "national_id": "234-56-7891", "email": "rg@example.com",
         "research_consent": "no"}


def _record(secret: bytes = AGENCY_SECRET, **overrides: Any) -> dict[str, Any]:
    rec = Tokenizer(secret).tokenize(dict(PLAIN, **overrides), attributes={"clinic": "north", "age": 44})
    wire: dict[str, Any] = json.loads(json.dumps(rec))  # as it arrives over the wire
    return wire


def _parse(obj: Any, *, accepted: list[str] | None = None, row: int = 1) -> ParsedRecord | list[Problem]:
    return parse_record(obj, row=row, server_secret=SERVER_SECRET, accepted_key_ids=accepted)


def _problems(obj: Any, **kw: Any) -> list[Problem]:
    result = _parse(obj, **kw)
    assert isinstance(result, list), "expected problems"
    assert result, "expected at least one problem"
    return result


def _all_token_strings(*records: dict[str, Any]) -> list[str]:
    out = []
    for r in records:
        toks = r.get("tokens")
        if isinstance(toks, dict):
            out += [t for t in toks.values() if isinstance(t, str)]
    return out


def _assert_no_tokens_in(problems: list[Problem], *records: dict[str, Any]) -> None:
    for tok in _all_token_strings(*records):
        digest_part = tok.partition(":")[2]
        for p in problems:
            text = p.describe() + (p.field or "") + p.reason
            assert tok not in text
            if len(digest_part) >= 8:
                assert digest_part not in text


def test_valid_record_round_trip() -> None:
    rec = _record()
    parsed = _parse(rec, accepted=[KID], row=7)
    assert isinstance(parsed, ParsedRecord)
    assert parsed.row == 7
    assert parsed.source_record_id == "rec-1"
    assert parsed.key_id == KID
    assert parsed.research_consent is False
    assert parsed.attributes == '{"age":44,"clinic":"north"}'
    assert parsed.tokens.dtype == np.int64 and parsed.tokens.shape == (len(TOKEN_NAMES),)
    for i, name in enumerate(TOKEN_NAMES):
        tok = rec["tokens"].get(name)
        if tok is None:
            assert parsed.tokens[i] == 0
        else:
            digest = split_token(tok)[1]
            expected = (BloomPermutation(SERVER_SECRET)(digest) if name in SIMILARITY_TOKENS
                        else rekey(SERVER_SECRET, digest))
            assert parsed.tokens[i] == expected
            assert parsed.tokens[i] != 0
    assert np.count_nonzero(parsed.tokens) == len(rec["tokens"])


def test_accepted_key_ids_none_accepts_any_key() -> None:
    assert isinstance(_parse(_record(OTHER_AGENCY_SECRET), accepted=None), ParsedRecord)


def test_same_value_from_shared_domains_rekeys_equal() -> None:
    parsed = _parse(_record())
    assert isinstance(parsed, ParsedRecord)
    # 1980-03-04 swapped is 1980-04-03: a different date, so a different storage token
    i_full, i_swap = TOKEN_NAMES.index("date_of_birth"), TOKEN_NAMES.index("date_of_birth.swap")
    assert parsed.tokens[i_full] != parsed.tokens[i_swap]
    swapped = _parse(_record(date_of_birth="1980-04-03", source_record_id="rec-2"))
    assert isinstance(swapped, ParsedRecord)
    assert swapped.tokens[i_full] == parsed.tokens[i_swap]


@pytest.mark.parametrize("version", [2, 0, "1", None, 1.5])
def test_unknown_schema_version(version: Any) -> None:
    rec = _record()
    rec["schema_version"] = version
    problems = _problems(rec)
    assert [p.field for p in problems] == ["schema_version"]
    assert problems[0].source_record_id == "rec-1"
    _assert_no_tokens_in(problems, rec)


def test_missing_schema_version() -> None:
    rec = _record()
    del rec["schema_version"]
    assert [p.field for p in _problems(rec)] == ["schema_version"]


def test_unknown_token_name() -> None:
    rec = _record()
    rec["tokens"]["favourite_colour"] = rec["tokens"]["given_name"]
    problems = _problems(rec)
    assert [(p.field, p.reason) for p in problems] == [("tokens.favourite_colour", "unknown token name")]
    _assert_no_tokens_in(problems, rec)


@pytest.mark.parametrize("bad", [
    "garbage", "", "abcdef12:", "abcdef12:short", ":" + "A" * 43, "abcdef12:" + "A" * 44,
])
def test_malformed_token(bad: str) -> None:
    rec = _record()
    good = rec["tokens"]["email"]
    rec["tokens"]["email"] = bad
    problems = _problems(rec)
    assert [p.field for p in problems] == ["tokens.email"]
    assert "malformed token" in problems[0].reason
    if bad:
        assert all(bad not in p.describe() for p in problems)
    assert all(good not in p.describe() for p in problems)


def test_token_not_a_string() -> None:
    rec = _record()
    rec["tokens"]["email"] = 12345
    problems = _problems(rec)
    assert [(p.field, p.reason) for p in problems] == [("tokens.email", "must be a string")]


def test_null_token_is_treated_as_missing() -> None:
    rec = _record()
    rec["tokens"]["email"] = None
    parsed = _parse(rec)
    assert isinstance(parsed, ParsedRecord)
    assert parsed.tokens[TOKEN_NAMES.index("email")] == 0


def test_tokens_from_two_secrets() -> None:
    rec = _record()
    other = _record(OTHER_AGENCY_SECRET)
    rec["tokens"]["email"] = other["tokens"]["email"]
    problems = _problems(rec)
    assert [p.field for p in problems] == ["tokens"]
    assert "more than one linkage key" in problems[0].reason
    _assert_no_tokens_in(problems, rec, other)


def test_unknown_key_id() -> None:
    rec = _record(OTHER_AGENCY_SECRET)
    problems = _problems(rec, accepted=[KID])
    assert [p.field for p in problems] == ["tokens"]
    assert "unknown linkage key id" in problems[0].reason
    assert key_id(OTHER_AGENCY_SECRET) in problems[0].reason  # key ids are public
    _assert_no_tokens_in(problems, rec)
    assert isinstance(_parse(rec, accepted=[KID, key_id(OTHER_AGENCY_SECRET)]), ParsedRecord)


@pytest.mark.parametrize("attrs", [["clinic"], "clinic=north", 3, True])
def test_attributes_not_an_object(attrs: Any) -> None:
    rec = _record()
    rec["attributes"] = attrs
    problems = _problems(rec)
    assert [(p.field, p.reason) for p in problems] == [("attributes", "must be an object")]
    _assert_no_tokens_in(problems, rec)


def test_attribute_values_and_names_checked() -> None:
    rec = _record()
    rec["attributes"] = {"clinic": {"nested": 1}}
    assert [p.field for p in _problems(rec)] == ["attributes.clinic"]
    rec["attributes"] = {"not an identifier": 1}
    assert [p.field for p in _problems(rec)] == ["attributes"]
    rec["attributes"] = {f"a{i}": i for i in range(65)}
    assert [p.field for p in _problems(rec)] == ["attributes"]
    rec["attributes"] = {}
    parsed = _parse(rec)
    assert isinstance(parsed, ParsedRecord) and parsed.attributes is None


@pytest.mark.parametrize("sid", [None, "", "   ", "x" * 129, "a\nb", 42])
def test_bad_source_record_id(sid: Any) -> None:
    rec = _record()
    rec["source_record_id"] = sid
    problems = _problems(rec)
    assert [p.field for p in problems] == ["source_record_id"]


def test_bad_research_consent_and_unknown_property() -> None:
    rec = _record()
    rec["research_consent"] = "no"
    rec["given_name"] = "Robert"
    problems = _problems(rec)
    assert sorted(p.field or "" for p in problems) == ["given_name", "research_consent"]


@pytest.mark.parametrize("obj", [None, [], "record", 1])
def test_not_an_object(obj: Any) -> None:
    problems = _problems(obj)
    assert problems[0].reason == "record must be a JSON object"


@pytest.mark.parametrize("tokens", [{}, None, [], "x"])
def test_tokens_must_be_non_empty_object(tokens: Any) -> None:
    rec = _record()
    rec["tokens"] = tokens
    assert [p.field for p in _problems(rec)] == ["tokens"]


def test_too_little_to_link() -> None:
    rec = _record()
    rec["tokens"] = {k: v for k, v in rec["tokens"].items() if k.startswith("given_name")}
    problems = _problems(rec)
    assert [p.field for p in problems] == ["tokens"]
    assert "too little to link on" in problems[0].reason
    _assert_no_tokens_in(problems, rec)


def test_many_problems_at_once_never_echo_tokens() -> None:
    rec = _record()
    other = _record(OTHER_AGENCY_SECRET)
    rec["schema_version"] = 99
    rec["tokens"]["email"] = other["tokens"]["email"]
    rec["tokens"]["bogus"] = rec["tokens"]["given_name"]
    rec["tokens"]["phone"] = rec["tokens"]["given_name"][:-3]
    rec["attributes"] = ["x"]
    rec["research_consent"] = "maybe"
    problems = _problems(rec, accepted=["00000000"])
    assert len(problems) >= 6
    assert all(p.row == 1 for p in problems)
    _assert_no_tokens_in(problems, rec, other)


def test_content_hash() -> None:
    base = _parse(_record())
    same = _parse(_record())
    assert isinstance(base, ParsedRecord) and isinstance(same, ParsedRecord)
    assert base.content_hash == same.content_hash
    # source_record_id and row are not content
    renamed = _parse(_record(source_record_id="rec-9"), row=5)
    assert isinstance(renamed, ParsedRecord) and renamed.content_hash == base.content_hash
    # attribute order does not matter (canonical JSON)
    rec = _record()
    rec["attributes"] = dict(reversed(list(rec["attributes"].items())))
    reordered = _parse(rec)
    assert isinstance(reordered, ParsedRecord) and reordered.content_hash == base.content_hash

    changed = []
    changed.append(_parse(_record(email="other@example.com")))  # one token changes
    rec = _record()
    del rec["tokens"]["email"]  # one token removed
    changed.append(_parse(rec))
    rec = _record()
    rec["attributes"]["clinic"] = "south"  # attribute changes
    changed.append(_parse(rec))
    rec = _record()
    del rec["attributes"]  # attributes removed
    changed.append(_parse(rec))
    rec = _record()
    rec["research_consent"] = True  # consent changes
    changed.append(_parse(rec))
    rec = _record()
    del rec["research_consent"]
    changed.append(_parse(rec))
    hashes = {base.content_hash}
    for c in changed:
        assert isinstance(c, ParsedRecord)
        hashes.add(c.content_hash)
    assert len(hashes) == len(changed) + 1


def test_content_hash_depends_on_server_key_only_through_tokens() -> None:
    rec = _record()
    a = parse_record(copy.deepcopy(rec), row=1, server_secret=SERVER_SECRET, accepted_key_ids=None)
    b = parse_record(copy.deepcopy(rec), row=1, server_secret=b"another-server-secret".ljust(32, b"."),
                     accepted_key_ids=None)
    assert isinstance(a, ParsedRecord) and isinstance(b, ParsedRecord)
    assert not np.array_equal(a.tokens, b.tokens)
    assert a.content_hash != b.content_hash


def test_schema_version_constant() -> None:
    assert _record()["schema_version"] == SCHEMA_VERSION


def test_non_hex_key_id_is_malformed_and_not_echoed() -> None:
    rec = _record()
    leaked = "JOHN SMITH 1980-03-04"
    for name, tok in rec["tokens"].items():
        rec["tokens"][name] = leaked + ":" + tok.partition(":")[2]
    problems = _problems(rec, accepted=[KID])
    assert any("malformed token" in p.reason for p in problems)
    assert all(leaked not in p.describe() for p in problems)


def test_similarity_tokens_are_permuted_keeping_their_bit_counts() -> None:
    """A stored similarity token is not the agency's value (not joinable with its files), yet
    every count the Dice comparison uses is kept, for any two tokens."""
    perm = BloomPermutation(SERVER_SECRET)
    other = BloomPermutation(b"another-server-secret-!!!!!!!!!!")
    rng = np.random.default_rng(5)
    for _ in range(200):
        a, b = (int(x) for x in rng.integers(1, 2**63, size=2))
        da, db = a.to_bytes(8, "little") + bytes(24), b.to_bytes(8, "little") + bytes(24)
        pa_, pb = perm(da) & (2**64 - 1), perm(db) & (2**64 - 1)
        assert pa_.bit_count() == a.bit_count() and (pa_ & pb).bit_count() == (a & b).bit_count()
        assert perm(da) != other(da) or a.bit_count() in (0, 64)
    assert sum(perm(x.to_bytes(8, "little") + bytes(24)) != x for x in range(1, 200)) > 150


def test_malformed_similarity_token_is_refused_with_its_field() -> None:
    rec = _record()
    kid = rec["tokens"]["given_name"].split(":")[0]
    rec["tokens"]["given_name.bloom"] = kid + ":" + "A" * 42 + "E"  # tail bytes not zero
    problems = _parse(rec, accepted=[KID], row=3)
    assert isinstance(problems, list)
    assert [(p.field, "similarity token" in p.reason) for p in problems] == [
        ("tokens.given_name.bloom", True)]
