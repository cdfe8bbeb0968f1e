"""Tests for mpi.agency.tokens: the agency token algorithm (known answers) and server re-keying."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest

from mpi.agency.schema import SCHEMA_VERSION, SIMILARITY_TOKENS, TOKEN_NAMES, schema_document
from mpi.agency.tokens import key_id, make_token, new_secret, rekey, split_token, tokenize_values
from mpi.errors import InvalidInput

SECRET = bytes(range(32))
KAT_KEY_ID = "03ba0360"
KAT_GIVEN_NAME_ROBERT = "03ba0360:pO0Aqhfcam7DIQN6DCqKD-gbfsdosxqhVyRFvRdkoXw"
KAT_DOB_1990_01_02 = "03ba0360:ATVSnnxu8bagAkfmJ7QEesj5zrVGh0plaSRX6WAuNmY"


def _reference_token(secret: bytes, domain: str, value: str, schema_version: int = 1) -> str:
    """The token computed straight from the published contract, without mpi.agency.tokens."""
    kid = hashlib.sha256(b"mpi-key-id/v1" + b"\x00" + secret).hexdigest()[:8]
    message = f"mpi/v{schema_version}/{domain}".encode() + b"\x00" + value.encode("utf-8")
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return kid + ":" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def test_contract_text_matches_reference_implementation() -> None:
    tok = schema_document()["token"]
    assert tok["algorithm"] == "HMAC-SHA256"
    assert tok["message"] == "b'mpi/v{schema_version}/{domain}' + 0x00 + utf8(normalized value)"
    assert tok["format"] == "{key_id}:{base64url(digest) without padding}"
    assert tok["key_id"] == "first 8 hex digits of SHA-256(b'mpi-key-id/v1' + 0x00 + secret)"


def test_key_id_known_answer() -> None:
    assert key_id(SECRET) == KAT_KEY_ID
    assert key_id(SECRET) == hashlib.sha256(b"mpi-key-id/v1\x00" + SECRET).hexdigest()[:8]


def test_make_token_known_answer_given_name() -> None:
    expected = _reference_token(SECRET, "given_name/full", "ROBERT")
    assert expected == KAT_GIVEN_NAME_ROBERT
    assert make_token(SECRET, "given_name", "ROBERT", kid=key_id(SECRET)) == KAT_GIVEN_NAME_ROBERT


def test_make_token_known_answer_date_of_birth() -> None:
    expected = _reference_token(SECRET, "date_of_birth/full", "1990-01-02")
    assert expected == KAT_DOB_1990_01_02
    assert make_token(SECRET, "date_of_birth", "1990-01-02", kid=KAT_KEY_ID) == KAT_DOB_1990_01_02


@pytest.mark.parametrize("name", TOKEN_NAMES)
def test_make_token_matches_reference_for_every_token_name(name: str) -> None:
    field, _, variant = name.partition(".")
    shared = {"date_of_birth.swap": "date_of_birth/full", "family_name.part1": "family_name/part",
              "family_name.part2": "family_name/part", "family_name.part3": "family_name/part",
              **{f"given_name.nick{i}": "given_name/nickgroup" for i in (1, 2, 3)}}
    domain = shared.get(name, f"{field}/{variant or 'full'}")
    value = "Zoë-ÉCOLE 1"  # non-ASCII value: utf-8 encoding is part of the contract
    reference = (_reference_bloom(SECRET, domain, value) if name in SIMILARITY_TOKENS
                 else _reference_token(SECRET, domain, value))
    assert make_token(SECRET, name, value, kid=KAT_KEY_ID) == reference


def _reference_bloom(secret: bytes, domain: str, value: str) -> str:
    """A similarity token computed straight from the published contract (schema document)."""
    kid = hashlib.sha256(b"mpi-key-id/v1" + b"\x00" + secret).hexdigest()[:8]
    bits = 0
    for part in value.split("|"):  # one part but for the unordered name pair (revision 3)
        padded = f"_{part}_"
        for i in range(len(padded) - 1):
            message = b"mpi/v1/" + domain.encode() + b"\x00" + padded[i:i + 2].encode("utf-8")
            digest = hmac.new(secret, message, hashlib.sha256).digest()
            bits |= (1 << (digest[0] % 64)) | (1 << (digest[1] % 64))
    raw = bits.to_bytes(8, "little") + bytes(24)
    return kid + ":" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_similarity_tokens_agree_on_similar_names_only() -> None:
    """Bloom filters of a name with one letter changed share most bits; another name few."""
    def bits(v: str) -> int:
        tok = make_token(SECRET, "family_name.bloom", v, kid=KAT_KEY_ID)
        return int.from_bytes(base64.urlsafe_b64decode(tok.split(":")[1] + "=")[:8], "little")

    def dice(a: str, b: str) -> float:
        x, y = bits(a), bits(b)
        return 2 * (x & y).bit_count() / (x.bit_count() + y.bit_count())
    assert dice("MCCARTHY", "MCCARHTY") >= 0.75
    assert dice("ZIMMERMANN", "ZIMMERRMNN") >= 0.75
    assert dice("MCCARTHY", "ROKOBARO") < 0.5


def test_name_order_free_token_is_the_union_of_both_names_pairs() -> None:
    """Contract revision 3: the name pair's filter pads each name on its own, so it is the same
    in either order, equals the reference, and stays similar when swapped names have a typo."""
    name = "family_name.name_set_bloom"

    def bits(v: str) -> int:
        tok = make_token(SECRET, name, v, kid=KAT_KEY_ID)
        assert tok == _reference_bloom(SECRET, "family_name/name_set_bloom", v)
        return int.from_bytes(base64.urlsafe_b64decode(tok.split(":")[1] + "=")[:8], "little")

    def dice(a: str, b: str) -> float:
        x, y = bits(a), bits(b)
        return 2 * (x & y).bit_count() / (x.bit_count() + y.bit_count())
    assert bits("BLAKE|MASON") == bits("MASON|BLAKE")
    assert bits("BLAKE|MASON") != bits("BLAKEMASON")  # padded per name, not joined
    assert dice("BLAKE|MASON", "BLAKF|MASON") >= 0.75  # "mason blake" / "blakf mason"
    assert dice("BLAKE|MASON", "ROKOBARO|ZIMMERMANN") < 0.5


def test_make_token_schema_version_is_in_the_message() -> None:
    v2 = make_token(SECRET, "given_name", "ROBERT", kid=KAT_KEY_ID, schema_version=2)
    assert v2 == _reference_token(SECRET, "given_name/full", "ROBERT", schema_version=2)
    assert v2 != KAT_GIVEN_NAME_ROBERT
    assert SCHEMA_VERSION == 1


def test_token_format() -> None:
    tok = make_token(SECRET, "email", "a@b.co", kid=KAT_KEY_ID)
    assert re.fullmatch(r"[0-9a-f]{8}:[A-Za-z0-9_-]{43}", tok)
    assert "=" not in tok


def test_domain_separation_between_fields_and_variants() -> None:
    value = "1990"
    names = ["given_name", "family_name", "given_name.prefix3", "family_name.prefix3",
             "date_of_birth.year", "national_id.last4", "postal_code", "postal_code.zip3",
             "phone", "middle_name", "city"]
    toks = {make_token(SECRET, n, value, kid=KAT_KEY_ID) for n in names}
    assert len(toks) == len(names)


def test_nickname_and_full_given_name_are_separate_domains() -> None:
    assert (make_token(SECRET, "given_name", "ROBERT", kid=KAT_KEY_ID)
            != make_token(SECRET, "given_name.nickname", "ROBERT", kid=KAT_KEY_ID))


def test_shared_domains_give_equal_tokens_for_equal_values() -> None:
    assert (make_token(SECRET, "date_of_birth.swap", "1990-03-02", kid=KAT_KEY_ID)
            == make_token(SECRET, "date_of_birth", "1990-03-02", kid=KAT_KEY_ID))
    assert (make_token(SECRET, "family_name.part1", "LOPEZ", kid=KAT_KEY_ID)
            == make_token(SECRET, "family_name.part2", "LOPEZ", kid=KAT_KEY_ID)
            == make_token(SECRET, "family_name.part3", "LOPEZ", kid=KAT_KEY_ID))
    # ... but not with the whole family name
    assert (make_token(SECRET, "family_name.part1", "LOPEZ", kid=KAT_KEY_ID)
            != make_token(SECRET, "family_name", "LOPEZ", kid=KAT_KEY_ID))
    # ... and different values still differ
    assert (make_token(SECRET, "family_name.part1", "LOPEZ", kid=KAT_KEY_ID)
            != make_token(SECRET, "family_name.part2", "GARCIA", kid=KAT_KEY_ID))


def test_different_secrets_give_different_tokens_and_key_ids() -> None:
    other = bytes(range(1, 33))
    assert key_id(other) != key_id(SECRET)
    t1 = make_token(SECRET, "given_name", "ROBERT", kid=key_id(SECRET))
    t2 = make_token(other, "given_name", "ROBERT", kid=key_id(other))
    assert t1.split(":")[1] != t2.split(":")[1]


def test_key_id_stable_and_hex() -> None:
    s = new_secret()
    assert len(s) == 32
    assert key_id(s) == key_id(bytes(s))
    assert re.fullmatch(r"[0-9a-f]{8}", key_id(s))
    assert new_secret() != s


def test_tokenize_values() -> None:
    out = tokenize_values(SECRET, {"given_name": "ROBERT", "date_of_birth": "1990-01-02"}, kid=KAT_KEY_ID)
    assert out == {"given_name": KAT_GIVEN_NAME_ROBERT, "date_of_birth": KAT_DOB_1990_01_02}


def test_split_token_roundtrip() -> None:
    kid, digest = split_token(KAT_GIVEN_NAME_ROBERT)
    assert kid == KAT_KEY_ID
    msg = b"mpi/v1/given_name/full\x00ROBERT"
    assert digest == hmac.new(SECRET, msg, hashlib.sha256).digest()
    assert len(digest) == 32


@pytest.mark.parametrize("bad", [
    "", "ROBERT", KAT_KEY_ID, KAT_KEY_ID + ":",
    KAT_GIVEN_NAME_ROBERT[:-1],  # 42 characters
    KAT_GIVEN_NAME_ROBERT + "A",  # 44 characters
    ":" + KAT_GIVEN_NAME_ROBERT.split(":")[1],  # no key id
    KAT_GIVEN_NAME_ROBERT.replace(":", ";"),
    KAT_GIVEN_NAME_ROBERT + "=",
])
def test_split_token_rejects_malformed_without_echoing(bad: str) -> None:
    with pytest.raises(InvalidInput) as info:
        split_token(bad)
    msg = str(info.value) + info.value.message + " ".join(p.describe() for p in info.value.problems)
    if bad:
        assert bad not in msg
    assert info.value.code == "invalid_input"


def test_split_token_rejects_non_base64url_characters() -> None:
    bad = KAT_KEY_ID + ":" + "!!!!" + "A" * 39
    with pytest.raises(InvalidInput):
        split_token(bad)


def test_split_token_rejects_key_id_that_is_not_8_hex() -> None:
    with pytest.raises(InvalidInput):
        split_token("JOHN SMITH:" + KAT_GIVEN_NAME_ROBERT.split(":")[1])


def test_rekey_deterministic_nonzero_and_keyed() -> None:
    _, digest = split_token(KAT_GIVEN_NAME_ROBERT)
    a = rekey(b"server-secret-1" * 2, digest)
    assert a == rekey(b"server-secret-1" * 2, digest)
    assert a != 0
    assert -(2 ** 63) <= a < 2 ** 63
    assert a != rekey(b"server-secret-2" * 2, digest)
    _, other = split_token(KAT_DOB_1990_01_02)
    assert a != rekey(b"server-secret-1" * 2, other)


def test_rekey_matches_reference() -> None:
    _, digest = split_token(KAT_GIVEN_NAME_ROBERT)
    server = b"k" * 32
    ref = int.from_bytes(hashlib.blake2b(digest, key=server, digest_size=8).digest(), "little", signed=True)
    assert rekey(server, digest) == (ref or 1)


def test_rekey_never_zero_over_many_inputs() -> None:
    server = bytes(32)
    assert all(rekey(server, i.to_bytes(32, "big")) != 0 for i in range(2000))
