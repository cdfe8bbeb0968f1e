"""Tests for mpi.agency.normalize: plaintext normalization and variant derivation."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpi.agency.normalize import (
    FieldError,
    derive_variants,
    fold,
    nickname_canonical,
    nickname_groups,
    normalize_address,
    normalize_city,
    normalize_date,
    normalize_email,
    normalize_name,
    normalize_national_id,
    normalize_phone,
    normalize_postal_code,
    normalize_record,
    normalize_sex,
    zero_pad_repair,
)

# --- names -------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    ("José", "JOSE"),
    ("Müller", "MULLER"),
    ("O'Brien", "OBRIEN"),
    ("O`Brien", "OBRIEN"),
    ("  mary   ann ", "MARY ANN"),
    ("Smith-Jones", "SMITH JONES"),
    ("Zoë", "ZOE"),
    ("Łukasz", "LUKASZ"),
    ("ＪＯＨＮ", "JOHN"),  # full-width letters fold via NFKC
])
def test_normalize_name_folds_unicode_and_punctuation(raw: str, expected: str) -> None:
    assert normalize_name(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("Dr. John Smith", "JOHN SMITH"),
    ("Mr John", "JOHN"),
    ("Mrs. Mary Jones", "MARY JONES"),
    ("John Smith Jr.", "JOHN SMITH"),
    ("John Smith III", "JOHN SMITH"),
    ("Rev. Dr. Martin King Jr", "MARTIN KING"),
    ("Robert Brown, PhD", "ROBERT BROWN"),
])
def test_normalize_name_removes_titles_and_suffixes(raw: str, expected: str) -> None:
    assert normalize_name(raw) == expected


def test_normalize_name_keeps_a_lone_title_or_suffix_word() -> None:
    # A single word is never stripped away to nothing.
    assert normalize_name("Dr") == "DR"
    assert normalize_name("V") == "V"


@pytest.mark.parametrize("raw", [
    "UNKNOWN", "unknown", "Baby Boy", "BABY GIRL", "baby", "N/A", "NULL", "fnu", "Test Patient",
    "Mr Unknown", "", "   ", "---", "123", "Twin A",
])
def test_normalize_name_placeholders_are_missing(raw: str) -> None:
    assert normalize_name(raw) is None


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_normalize_name_never_raises_and_is_idempotent(raw: str) -> None:
    once = normalize_name(raw)
    if once is not None:
        assert normalize_name(once) == once
        assert once == once.strip()
        assert "  " not in once
        assert all(c.isascii() and (c.isupper() or c.isdigit() or c == " ") for c in once)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["MR", "DR", "JR", "III", "JOHN", "SMITH", "X", "V", "BABY", "BOY"]),
                min_size=1, max_size=6).map(" ".join))
def test_normalize_name_idempotent_on_title_suffix_mixtures(raw: str) -> None:
    once = normalize_name(raw)
    if once is not None:
        assert normalize_name(once) == once


def test_fold_output_alphabet() -> None:
    assert fold("Ça va, l'ami!") == "CA VA LAMI"
    assert fold("a\tb\nc") == "A B C"


# --- national id ---------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    ("123-45-6780", "123456780"),
    ("123 45 6780", "123456780"),
    ("234567890", "234567890"),
])
def test_national_id_valid(raw: str, expected: str) -> None:
    assert normalize_national_id(raw) == expected


@pytest.mark.parametrize("raw", [
    "000-00-0000", "123-45-6789", "987-65-4321", "078-05-1120", "111-11-1111",
    "900-12-3456", "987-12-3456", "999-45-6780",  # 9xx area
    "000-12-3456", "666-12-3456",  # impossible areas
    "123-00-4567", "123-45-0000",  # zero group / serial
    "", "---",
])
def test_national_id_placeholders_and_impossible_are_missing(raw: str) -> None:
    assert normalize_national_id(raw) is None


@pytest.mark.parametrize("raw", ["12345678", "1234567890", "123-45-678", "1"])
def test_national_id_wrong_length_raises_field_error(raw: str) -> None:
    with pytest.raises(FieldError) as info:
        normalize_national_id(raw)
    assert info.value.field == "national_id"
    assert info.value.reason.startswith("expected 9 digits")


@pytest.mark.parametrize(("raw", "expected"), [
    ("1451137", "001451137"),     # 7 digits: spreadsheet dropped two leading zeros
    ("12-345-678", "012345678"),  # 8 digits
    ("234-56-7891", "234567891"),  # 9 digits: unchanged
])
def test_national_id_zero_pad(raw: str, expected: str) -> None:
    assert normalize_national_id(raw, zero_pad=True) == expected


@pytest.mark.parametrize("raw", ["9004242", "0001234", "1230000", "78051120"])
def test_national_id_invalid_after_zero_pad_raises(raw: str) -> None:
    # group 00 / area 000 / serial 0000 / the Woolworth placeholder, once padded: a guess that
    # fails the SSN rules is reported, not silently treated as unknown
    with pytest.raises(FieldError) as info:
        normalize_national_id(raw, zero_pad=True)
    assert info.value.field == "national_id"
    assert "zero-padded" in info.value.reason and raw not in info.value.reason


def test_national_id_zero_pad_off_names_the_likely_cause() -> None:
    with pytest.raises(FieldError) as info:
        normalize_national_id("1451137")
    assert info.value.reason.startswith("expected 9 digits, got 7")
    assert "leading zeros" in info.value.reason
    with pytest.raises(FieldError):
        normalize_national_id("123456", zero_pad=True)  # 6 digits: never padded
    assert normalize_national_id("987-65-4321", zero_pad=True) is None  # 9-digit rules unchanged


# --- dates ---------------------------------------------------------------------------------


def test_date_iso_accepted() -> None:
    assert normalize_date("1990-01-02") == "1990-01-02"
    assert normalize_date(" 1990-01-02 ") == "1990-01-02"


def test_date_non_iso_rejected_without_declared_formats() -> None:
    with pytest.raises(FieldError) as info:
        normalize_date("01/02/1990")
    assert info.value.field == "date_of_birth"
    assert "01/02/1990" not in info.value.reason


def test_date_non_iso_accepted_with_declared_format() -> None:
    assert normalize_date("01/02/1990", formats=["%m/%d/%Y"]) == "1990-01-02"
    assert normalize_date("02.01.1990", formats=["%m/%d/%Y", "%d.%m.%Y"]) == "1990-01-02"


def test_date_declared_format_mismatch_rejected() -> None:
    with pytest.raises(FieldError) as info:
        normalize_date("1990/01/02", formats=["%m/%d/%Y"])
    assert "not an ISO 8601 date" in info.value.reason


@pytest.mark.parametrize("raw", ["19510231", "19510229", "19510431"])
def test_date_impossible_in_declared_format_says_so(raw: str) -> None:
    with pytest.raises(FieldError) as info:
        normalize_date(raw, formats=["%Y%m%d"])
    assert info.value.reason == "not a valid calendar date"


@pytest.mark.parametrize("raw", ["1900-01-01", "1899-12-31", "9999-12-31", ""])
def test_date_placeholders_are_missing(raw: str) -> None:
    assert normalize_date(raw) is None


def test_date_placeholder_in_declared_format_is_missing() -> None:
    assert normalize_date("01/01/1900", formats=["%m/%d/%Y"]) is None


def test_date_future_rejected_when_today_given() -> None:
    today = dt.date(2024, 6, 1)
    assert normalize_date("2024-06-01", today=today) == "2024-06-01"
    with pytest.raises(FieldError) as info:
        normalize_date("2024-06-02", today=today)
    assert info.value.field == "date_of_birth"
    # Without ``today`` there is no clock, so the same date is accepted.
    assert normalize_date("2024-06-02") == "2024-06-02"


@pytest.mark.parametrize("raw", ["1990-13-01", "1990-02-30", "1850-01-01"])
def test_date_impossible_rejected(raw: str) -> None:
    with pytest.raises(FieldError) as info:
        normalize_date(raw)
    assert info.value.field == "date_of_birth"


def test_date_field_name_is_configurable() -> None:
    with pytest.raises(FieldError) as info:
        normalize_date("nope", field="other_date")
    assert info.value.field == "other_date"


def test_date_error_reason_never_echoes_the_value() -> None:
    raw = "\u0661\u0669\u0669\u0660-\u0660\u0661-\u0660\u0662"  # 1990-01-02 in Arabic-Indic digits
    try:
        normalize_date(raw)
    except FieldError as exc:
        assert raw not in exc.reason
    # either a FieldError without the value, or a normalized ASCII date is acceptable


# --- sex, postal code, phone, email, address, city ---------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    ("m", "M"), ("Male", "M"), ("F", "F"), ("female", "F"), ("X", "X"), ("other", "X"),
    ("U", None), ("unknown", None), ("", None),
])
def test_sex(raw: str, expected: str | None) -> None:
    assert normalize_sex(raw) == expected


def test_sex_invalid() -> None:
    with pytest.raises(FieldError) as info:
        normalize_sex("Q")
    assert info.value.field == "sex"


@pytest.mark.parametrize(("raw", "expected"), [
    ("12345", "12345"), ("12345-6789", "12345"), ("123456789", "12345"), ("00000", None),
    ("", None),
])
def test_postal_code(raw: str, expected: str | None) -> None:
    assert normalize_postal_code(raw) == expected


@pytest.mark.parametrize("raw", ["1234", "123456", "12345-67"])
def test_postal_code_wrong_length(raw: str) -> None:
    with pytest.raises(FieldError) as info:
        normalize_postal_code(raw)
    assert info.value.field == "postal_code"


@pytest.mark.parametrize(("raw", "expected"), [
    ("2139", "02139"), ("501", "00501"), ("2139-1234", "02139"), ("21391234", "02139"),
    ("12345", "12345"), ("000", None),
])
def test_postal_code_zero_pad(raw: str, expected: str | None) -> None:
    assert normalize_postal_code(raw, zero_pad=True) == expected


@pytest.mark.parametrize("raw", ["12", "123456", "1234567", "1234567890"])
def test_postal_code_zero_pad_leaves_other_lengths_malformed(raw: str) -> None:
    with pytest.raises(FieldError) as info:
        normalize_postal_code(raw, zero_pad=True)
    assert info.value.reason == f"expected 5 or 9 digits, got {len(raw)}"


def test_postal_code_zero_pad_off_names_the_likely_cause() -> None:
    with pytest.raises(FieldError) as info:
        normalize_postal_code("2139")
    assert "got 4" in info.value.reason and "leading zeros" in info.value.reason


@pytest.mark.parametrize(("field", "raw", "note"), [
    ("postal_code", "2139", "zero-padded 4-digit ZIP to 5 digits"),
    ("postal_code", "501", "zero-padded 3-digit ZIP to 5 digits"),
    ("postal_code", "2139-1234", "zero-padded 8-digit ZIP+4 to 9 digits"),
    ("national_id", "1451137", "zero-padded 7-digit SSN to 9 digits"),
    ("national_id", "12345678", "zero-padded 8-digit SSN to 9 digits"),
    ("postal_code", "02139", None), ("national_id", "234567891", None),
    ("phone", "1234567", None), ("given_name", "1234", None),
])
def test_zero_pad_repair_names_what_padding_does(field: str, raw: str, note: str | None) -> None:
    assert zero_pad_repair(field, raw) == note


@pytest.mark.parametrize(("raw", "expected"), [
    ("(555) 123-4567", "5551234567"),
    ("+1 555 123 4567", "5551234567"),
    ("1-555-123-4567", "5551234567"),
    ("555.123.4567", "5551234567"),
    ("123-4567", "1234567"),
    ("+44 20 7946 0958", "442079460958"),
    ("555-555-5555", None),
    ("000-000-0000", None),
    ("", None),
])
def test_phone(raw: str, expected: str | None) -> None:
    assert normalize_phone(raw) == expected


def test_phone_leading_one_only_removed_from_eleven_digits() -> None:
    assert normalize_phone("15551234567") == "5551234567"
    assert normalize_phone("25551234567") == "25551234567"
    assert normalize_phone("1555123456") == "1555123456"


@pytest.mark.parametrize("raw", ["12345", "1234567890123456"])
def test_phone_wrong_length(raw: str) -> None:
    with pytest.raises(FieldError) as info:
        normalize_phone(raw)
    assert info.value.field == "phone"


def test_email_lowercased_and_trimmed() -> None:
    assert normalize_email("  John.Smith@Example.COM ") == "john.smith@example.com"
    assert normalize_email("") is None


@pytest.mark.parametrize("raw", ["john", "john@", "@example.com", "john@example", "a@b@c.com",
                                 "john smith@example.com"])
def test_email_invalid(raw: str) -> None:
    with pytest.raises(FieldError) as info:
        normalize_email(raw)
    assert info.value.field == "email"
    assert raw not in info.value.reason


def test_address_abbreviations() -> None:
    assert normalize_address("123 North Main Street, Apartment 4") == "123 N MAIN ST APT 4"
    assert normalize_address("") is None


def test_city() -> None:
    assert normalize_city("Saint Louis") == "ST LOUIS"
    assert normalize_city("São Paulo") == "SAO PAULO"
    assert normalize_city(" ") is None


# --- normalize_record --------------------------------------------------------------------


def test_normalize_record_collects_errors_and_skips_missing() -> None:
    values, errors = normalize_record({
        "given_name": "Bob", "family_name": "UNKNOWN", "national_id": "1234",
        "date_of_birth": "01/02/1990", "phone": None, "email": "", "postal_code": "12345-6789",
    })
    assert values == {"given_name": "BOB", "postal_code": "12345"}
    assert sorted(e.field for e in errors) == ["date_of_birth", "national_id"]


def test_normalize_record_date_formats_and_today() -> None:
    values, errors = normalize_record({"date_of_birth": "01/02/1990"}, date_formats=["%m/%d/%Y"],
                                      today=dt.date(2000, 1, 1))
    assert values == {"date_of_birth": "1990-01-02"} and errors == []
    _, errors = normalize_record({"date_of_birth": "2001-01-01"}, today=dt.date(2000, 1, 1))
    assert [e.field for e in errors] == ["date_of_birth"]


def test_normalize_record_zero_pad() -> None:
    raw = {"postal_code": "2139", "national_id": "1451137"}
    values, errors = normalize_record(raw, zero_pad=True)
    assert values == {"postal_code": "02139", "national_id": "001451137"} and errors == []
    values, errors = normalize_record(raw)
    assert values == {} and sorted(e.field for e in errors) == ["national_id", "postal_code"]


# --- variants ----------------------------------------------------------------------------


def test_derive_variants_swap_only_when_valid() -> None:
    v = derive_variants({"date_of_birth": "1990-02-03"})
    assert v["date_of_birth.swap"] == "1990-03-02"
    assert v["date_of_birth.year_month"] == "1990-02"
    assert v["date_of_birth.month_day"] == "02-03"
    assert v["date_of_birth.year_day"] == "1990-03"
    assert v["date_of_birth.year"] == "1990"
    # day > 12: swapped date would be invalid
    assert "date_of_birth.swap" not in derive_variants({"date_of_birth": "1990-02-13"})
    # day == month: swap is the same date, so it is not emitted
    assert "date_of_birth.swap" not in derive_variants({"date_of_birth": "1990-05-05"})


def test_derive_variants_compound_family_parts() -> None:
    v = derive_variants({"family_name": normalize_name("García-López de la Cruz") or ""})
    assert v["family_name"] == "GARCIA LOPEZ DE LA CRUZ"
    assert v["family_name.part1"] == "GARCIA"
    assert v["family_name.part2"] == "LOPEZ"
    assert v["family_name.part3"] == "DE"
    assert v["family_name.prefix3"] == "GAR"
    assert v["family_name.phonetic"]
    single = derive_variants({"family_name": "SMITH"})
    assert single["family_name.part1"] == "SMITH"
    assert "family_name.part2" not in single


def test_derive_variants_given_and_middle() -> None:
    v = derive_variants({"given_name": "ROBERT", "middle_name": "JAMES"})
    assert v["given_name.prefix3"] == "ROB"
    assert v["given_name.nickname"] == "ROBERT"
    assert v["given_name.phonetic"] == "RABAD"
    assert v["middle_name.initial"] == "J"


def test_derive_variants_zip3_and_last4() -> None:
    v = derive_variants({"postal_code": "02139", "national_id": "123456780"})
    assert v["postal_code.zip3"] == "021"
    assert v["national_id.last4"] == "6780"


def test_derive_variants_only_schema_token_names() -> None:
    from mpi.agency.schema import TOKEN_NAMES
    v = derive_variants({"given_name": "ROBERT", "middle_name": "J", "family_name": "A B C D",
                         "date_of_birth": "1990-02-03", "sex": "M", "national_id": "123456780",
                         "postal_code": "12345", "address_line": "1 MAIN ST", "city": "BOSTON",
                         "phone": "5551234567", "email": "a@b.co"})
    assert set(v) == set(TOKEN_NAMES)


@pytest.mark.parametrize(("nick", "formal"), [("BOB", "ROBERT"), ("LIZ", "ELIZABETH"),
                                              ("Bobby", "Robert"), ("BETH", "ELIZABETH")])
def test_nickname_canonical_agrees(nick: str, formal: str) -> None:
    a = derive_variants({"given_name": normalize_name(nick) or ""})["given_name.nickname"]
    b = derive_variants({"given_name": normalize_name(formal) or ""})["given_name.nickname"]
    assert a == b


def test_nickname_canonical_uses_first_word() -> None:
    assert nickname_canonical("BOB JAMES") == nickname_canonical("ROBERT")


@pytest.mark.parametrize(("nick", "formal"), [
    ("BILL", "WILLIAM"), ("JOHNNY", "JOHN"), ("TONY", "ANTHONY"), ("SAM", "SAMUEL"),
    ("MIKEY", "MICHAEL"), ("BOB", "ROBERT"), ("BOBBY", "ROBERT"), ("LIZ", "ELIZABETH"),
    ("BETH", "ELIZABETH"), ("WILL", "WILLIAM"), ("JIM", "JAMES"), ("JIMMY", "JAMES"),
    ("CHRIS", "CHRISTOPHER"), ("CHRIS", "CHRISTINE"), ("KATE", "KATHERINE"), ("PAT", "PATRICIA"),
    ("PAT", "PATRICK"), ("DICK", "RICHARD"), ("PEGGY", "MARGARET"), ("TOM", "THOMAS"),
    ("DAVE", "DAVID"), ("STEVE", "STEVEN"), ("BEN", "BENJAMIN"), ("MATT", "MATTHEW"),
    ("JOE", "JOSEPH"), ("TED", "EDWARD"), ("PEPE", "JOSE"), ("PACO", "FRANCISCO"),
    ("LUPE", "GUADALUPE"), ("CHUY", "JESUS")])
def test_nickname_groups_agree_both_ways(nick: str, formal: str) -> None:
    """A nickname and its formal name share a nickname group token whichever way round they
    come (one canonical form per name could not: BILL -> ROBERT but WILLIAM -> WILLIAM)."""
    def groups(name: str) -> set[str]:
        v = derive_variants({"given_name": normalize_name(name) or ""})
        return {v[f"given_name.nick{i}"] for i in (1, 2, 3) if f"given_name.nick{i}" in v}
    assert groups(nick) & groups(formal)
    assert groups(nick.lower()) == groups(nick)


@pytest.mark.parametrize(("a", "b"), [("WILLIAM", "MICHAEL"), ("JOHN", "ROBERT"),
                                      ("MARY", "ELIZABETH"), ("ZYLA", "ZORA")])
def test_different_names_share_no_nickname_group(a: str, b: str) -> None:
    assert not set(nickname_groups(a)) & set(nickname_groups(b))
