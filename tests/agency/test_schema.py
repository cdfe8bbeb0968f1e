"""Tests for mpi.agency.schema: the published token contract."""

from __future__ import annotations

import json

from mpi.agency.schema import (
    EVIDENCE_GROUPS,
    FIELD_NAMES,
    FIELDS,
    MIN_EVIDENCE,
    SCHEMA_VERSION,
    SHARED_DOMAINS,
    TOKEN_COLUMNS,
    TOKEN_NAMES,
    column_name,
    evidence_groups_present,
    get_field,
    schema_document,
    token_domain,
    token_name,
)

EXPECTED_FIELDS = ["given_name", "middle_name", "family_name", "date_of_birth", "sex", "national_id",
                   "postal_code", "address_line", "city", "phone", "email"]


def test_schema_document_is_json_serialisable() -> None:
    doc = schema_document()
    assert json.loads(json.dumps(doc)) == doc
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["token"]["algorithm"] == "HMAC-SHA256"
    assert doc["minimum_evidence"]["at_least"] == MIN_EVIDENCE


def test_schema_document_lists_all_fields() -> None:
    doc = schema_document()
    assert [f["name"] for f in doc["fields"]] == EXPECTED_FIELDS
    assert list(FIELD_NAMES) == EXPECTED_FIELDS
    for f in doc["fields"]:
        assert f["description"] and f["normalization"]
        assert f["tokens"][0] == {"name": f["name"], "variant": "full",
                                  "description": "the normalized value itself", "since_revision": 1}


def test_schema_document_tokens_match_token_names() -> None:
    """Storage positions: every revision's tokens in field order, revisions one after another."""
    doc = schema_document()
    tokens = [t for f in doc["fields"] for t in f["tokens"]]
    names = [t["name"] for t in sorted(tokens, key=lambda t: t["since_revision"])]
    assert names == list(TOKEN_NAMES)


# Revision 1's 27 tokens, in the positions stored registries hold them at: a later revision
# may only append (mpi/store/migrations.py pads stored lists to the new width).
REVISION_1 = (
    "given_name", "given_name.phonetic", "given_name.prefix3", "given_name.nickname",
    "middle_name", "middle_name.initial", "family_name", "family_name.phonetic",
    "family_name.prefix3", "family_name.part1", "family_name.part2", "family_name.part3",
    "date_of_birth", "date_of_birth.swap", "date_of_birth.year_month", "date_of_birth.month_day",
    "date_of_birth.year_day", "date_of_birth.year", "sex", "national_id", "national_id.last4",
    "postal_code", "postal_code.zip3", "address_line", "city", "phone", "email")


def test_later_revisions_only_append_token_positions() -> None:
    assert TOKEN_NAMES[: len(REVISION_1)] == REVISION_1
    from mpi.store.migrations import MIGRATIONS
    pads = [stmts for _v, desc, stmts in MIGRATIONS if "padded" in desc]
    # the newest padding migration pads to every position of the current revision
    assert pads and all(f"list_resize(tokens, {len(TOKEN_NAMES)}, 0)" in sql for sql in pads[-1])


def test_token_names_unique_and_columns_valid_identifiers() -> None:
    assert len(set(TOKEN_NAMES)) == len(TOKEN_NAMES)
    assert len(set(TOKEN_COLUMNS)) == len(TOKEN_COLUMNS)
    assert len(TOKEN_COLUMNS) == len(TOKEN_NAMES)
    for col in TOKEN_COLUMNS:
        assert col.isidentifier(), col
        assert col.isascii() and col == col.lower()


def test_token_name_and_column_name() -> None:
    assert token_name("given_name", "full") == "given_name"
    assert token_name("given_name", "phonetic") == "given_name.phonetic"
    assert column_name("given_name.phonetic") == "given_name_phonetic"
    assert "given_name.nickname" in TOKEN_NAMES
    assert "date_of_birth.swap" in TOKEN_NAMES


def test_token_domains() -> None:
    assert token_domain("given_name") == "given_name/full"
    assert token_domain("given_name.phonetic") == "given_name/phonetic"
    assert token_domain("date_of_birth.swap") == token_domain("date_of_birth") == "date_of_birth/full"
    assert token_domain("family_name.part1") == token_domain("family_name.part3") == "family_name/part"
    for name in SHARED_DOMAINS:
        assert name in TOKEN_NAMES


def test_evidence_groups_reference_real_fields() -> None:
    for fields in EVIDENCE_GROUPS.values():
        for f in fields:
            assert f in FIELD_NAMES
    assert evidence_groups_present({"given_name", "date_of_birth"}) == ["name", "date_of_birth"]
    assert evidence_groups_present({"postal_code"}) == ["address"]
    assert evidence_groups_present(set()) == []


def test_get_field() -> None:
    assert get_field("email") is FIELDS[-1]
    try:
        get_field("nope")
    except KeyError:
        pass
    else:
        raise AssertionError("expected KeyError")
