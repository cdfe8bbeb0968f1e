"""Tests for mpi.agency.tokenizer: plaintext CSV/Parquet in, token-only JSONL/Parquet out."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpi.agency.schema import SCHEMA_VERSION, TOKEN_NAMES
from mpi.agency.tokenizer import RecordRejected, Tokenizer, parse_consent, tokenize_file
from mpi.agency.tokens import key_id
from mpi.errors import InvalidInput
from tests.support.paths import PUBLIC_LINKAGE

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(100, 132))

COLUMNS = ["source_record_id", "given_name", "family_name", "date_of_birth", "national_id", "phone",
           "email", "clinic", "research_consent", "notes"]

GOOD_1 = {"source_record_id": "r1", "given_name": "Johnathan", "family_name": "Smithers",
          "date_of_birth": "1971-04-09", "national_id": "234-56-7891", "phone": "(617) 555-0142",
          "email": "J.Smithers@Example.org", "clinic": "north", "research_consent": "yes",
          "notes": "confidential-note-1"}
GOOD_2 = {"source_record_id": "r2", "given_name": "María", "family_name": "García-López",
          "date_of_birth": "1985-12-31", "national_id": "", "phone": "", "email": "",
          "clinic": "", "research_consent": "", "notes": "confidential-note-2"}
BAD_DATE = {"source_record_id": "r3", "given_name": "Quentin", "family_name": "Tarrant",
            "date_of_birth": "1990-13-01", "national_id": "", "phone": "", "email": "",
            "clinic": "south", "research_consent": "", "notes": ""}
BAD_SSN = {"source_record_id": "r4", "given_name": "Ulrika", "family_name": "Vandersloot",
           "date_of_birth": "1962-07-15", "national_id": "34567", "phone": "", "email": "",
           "clinic": "", "research_consent": "no", "notes": ""}
TOO_LITTLE = {"source_record_id": "r5", "given_name": "Wilhelmina", "family_name": "", "date_of_birth": "",
              "national_id": "", "phone": "", "email": "", "clinic": "", "research_consent": "",
              "notes": ""}
DUPLICATE = dict(GOOD_1, given_name="Xavier", family_name="Yarborough", email="xy@example.net",
                 phone="", national_id="")
MISSING_SID = {"source_record_id": "  ", "given_name": "Zebulon", "family_name": "Abernathy",
               "date_of_birth": "1955-03-03", "national_id": "", "phone": "", "email": "",
               "clinic": "", "research_consent": "", "notes": ""}
BAD_CONSENT = {"source_record_id": "r8", "given_name": "Bartholomew", "family_name": "Cuthbert",
               "date_of_birth": "1944-11-11", "national_id": "", "phone": "", "email": "",
               "clinic": "", "research_consent": "maybe", "notes": ""}

ROWS = [GOOD_1, GOOD_2, BAD_DATE, BAD_SSN, TOO_LITTLE, DUPLICATE, MISSING_SID, BAD_CONSENT]
# expected refusals: row number -> (field, reason fragment). Row 3 loses its impossible date
# and is then left with a name only; row 4 loses its SSN but keeps name + date (kept).
EXPECTED_REJECTS = {
    3: ("date_of_birth", "not a valid calendar date"),
    5: ("", "too little to link on"),
    6: ("source_record_id", "duplicate of row 1"),
    7: ("source_record_id", "missing"),
    8: ("research_consent", "expected true/false"),
}

# Every plaintext identifier value (raw and normalized) that must never reach an output file.
PLAINTEXT = [
    "Johnathan", "JOHNATHAN", "Smithers", "SMITHERS", "1971-04-09", "234-56-7891", "234567891",
    "7891", "(617) 555-0142", "6175550142", "555-0142", "J.Smithers@Example.org", "j.smithers@example.org",
    "María", "MARIA", "García", "GARCIA", "LOPEZ", "1985-12-31",
    "Quentin", "QUENTIN", "Tarrant", "TARRANT", "1990-13-01",
    "Ulrika", "ULRIKA", "Vandersloot", "VANDERSLOOT", "1962-07-15", "34567",
    "Wilhelmina", "WILHELMINA", "Xavier", "XAVIER", "Yarborough", "YARBOROUGH", "xy@example.net",
    "Zebulon", "ZEBULON", "Abernathy", "ABERNATHY", "1955-03-03",
    "Bartholomew", "BARTHOLOMEW", "Cuthbert", "CUTHBERT", "1944-11-11",
    "confidential-note",
]


def _write_csv(path: Path, rows: list[dict[str, str]], columns: list[str] = COLUMNS) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in columns})
    return path


def _write_parquet(path: Path, rows: list[dict[str, str]], columns: list[str] = COLUMNS) -> Path:
    pq.write_table(pa.table({c: [r.get(c, "") for r in rows] for c in columns},
                            schema=pa.schema([(c, pa.string()) for c in columns])), path)
    return path


def _read_rejects(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["row", "source_record_id", "field", "outcome", "reason"]
        return list(reader)


def _refused_rows(rows: list[dict[str, str]]) -> set[int]:
    return {int(r["row"]) for r in rows if r["outcome"] == "refused"}


def _read_output(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
        return rows
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _assert_no_plaintext(*paths: Path) -> None:
    for p in paths:
        data = p.read_bytes()
        texts = [data]
        if p.suffix == ".parquet":
            texts.append(json.dumps(pq.read_table(p).to_pylist(), ensure_ascii=False,
                                    default=str).encode())
        for blob in texts:
            for value in PLAINTEXT:
                assert value.encode() not in blob, f"plaintext {value!r} found in {p.name}"


@pytest.fixture(params=["csv", "parquet"])
def input_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    if request.param == "csv":
        return _write_csv(tmp_path / "in.csv", ROWS)
    return _write_parquet(tmp_path / "in.parquet", ROWS)


@pytest.mark.parametrize("out_name", ["out.jsonl", "out.parquet"])
def test_tokenize_file_outputs_tokens_only_and_rejects_bad_rows(input_file: Path, tmp_path: Path,
                                                                out_name: str) -> None:
    out = tmp_path / out_name
    summary = tokenize_file(input_file, secret=SECRET, out=out, attributes=["clinic"])

    assert summary.rows == len(ROWS)
    assert summary.written == 3
    assert summary.rejected == len(EXPECTED_REJECTS)
    assert summary.rows == summary.written + summary.rejected
    assert (summary.kept_with_warnings, summary.dropped, summary.repaired) == (1, 1, 0)
    assert summary.key_id == key_id(SECRET)
    assert summary.ignored_columns == ["notes"]
    assert summary.output == out
    assert summary.rejects == tmp_path / (out_name + ".rejects.csv")

    records = _read_output(out)
    assert len(records) == summary.written
    assert [r["source_record_id"] for r in records] == ["r1", "r2", "r4"]
    r4 = records[2]
    toks = r4["tokens"] if "tokens" in r4 else {n: r4[n] for n in TOKEN_NAMES if r4[n] is not None}
    assert "national_id" not in toks and "date_of_birth" in toks

    rejects = _read_rejects(summary.rejects)
    assert _refused_rows(rejects) == set(EXPECTED_REJECTS)
    for row_no, (field, fragment) in EXPECTED_REJECTS.items():
        hits = [r for r in rejects if int(r["row"]) == row_no]
        assert all(r["outcome"] == "refused" for r in hits)
        assert any(r["field"] == field and fragment in r["reason"] for r in hits), (row_no, hits)
    # the refused row 3 lists its dropped date and the refusal it led to
    assert {(r["field"], r["outcome"]) for r in rejects if r["row"] == "3"} == {
        ("date_of_birth", "refused"), ("", "refused")}
    assert [(r["source_record_id"], r["field"], r["outcome"]) for r in rejects
            if r["row"] == "4"] == [("r4", "national_id", "dropped")]
    assert "expected 9 digits, got 5" in next(r["reason"] for r in rejects if r["row"] == "4")
    assert {r["source_record_id"] for r in rejects if int(r["row"]) == 3} == {"r3"}
    assert {r["source_record_id"] for r in rejects if int(r["row"]) == 7} == {""}

    _assert_no_plaintext(out, summary.rejects)


def test_jsonl_record_shape(tmp_path: Path) -> None:
    src = _write_csv(tmp_path / "in.csv", ROWS)
    out = tmp_path / "out.jsonl"
    tokenize_file(src, secret=SECRET, out=out, attributes=["clinic"])
    r1, r2, _r4 = _read_output(out)
    assert set(r1) == {"source_record_id", "schema_version", "tokens", "attributes", "research_consent"}
    assert r1["schema_version"] == SCHEMA_VERSION
    assert r1["attributes"] == {"clinic": "north"}
    assert r1["research_consent"] is True
    assert "attributes" not in r2 and "research_consent" not in r2  # blank attribute/consent omitted
    kid = key_id(SECRET)
    for rec in (r1, r2):
        assert set(rec["tokens"]) <= set(TOKEN_NAMES)
        assert all(t.startswith(kid + ":") and len(t) == 9 + 43 for t in rec["tokens"].values())
    assert {"national_id", "national_id.last4", "phone", "email", "given_name.nickname"} <= set(r1["tokens"])
    assert {"family_name.part1", "family_name.part2"} <= set(r2["tokens"])
    assert "national_id" not in r2["tokens"]


def test_parquet_output_layout_and_same_tokens_as_jsonl(tmp_path: Path) -> None:
    src = _write_parquet(tmp_path / "in.parquet", ROWS)
    tokenize_file(src, secret=SECRET, out=tmp_path / "out.parquet", attributes=["clinic"])
    tokenize_file(_write_csv(tmp_path / "in.csv", ROWS), secret=SECRET, out=tmp_path / "out.jsonl",
                  attributes=["clinic"])
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names == ["source_record_id", "schema_version", *TOKEN_NAMES, "attributes",
                                  "research_consent"]
    rows = table.to_pylist()
    jsonl = _read_output(tmp_path / "out.jsonl")
    for prow, jrec in zip(rows, jsonl, strict=True):
        assert prow["source_record_id"] == jrec["source_record_id"]
        assert {n: prow[n] for n in TOKEN_NAMES if prow[n] is not None} == jrec["tokens"]
        assert prow["research_consent"] == jrec.get("research_consent")
        assert (json.loads(prow["attributes"]) if prow["attributes"] else None) == jrec.get("attributes")


def test_all_rows_rejected_gives_empty_valid_outputs(tmp_path: Path) -> None:
    src = _write_csv(tmp_path / "in.csv", [BAD_DATE, TOO_LITTLE])
    for name in ("out.jsonl", "out.parquet"):
        summary = tokenize_file(src, secret=SECRET, out=tmp_path / name,
                                rejects=tmp_path / f"{name}.rej.csv")
        assert (summary.rows, summary.written, summary.rejected) == (2, 0, 2)
        assert _read_output(tmp_path / name) == []
        assert summary.rejects == tmp_path / f"{name}.rej.csv"
        rej = _read_rejects(summary.rejects)
        assert _refused_rows(rej) == {1, 2}
        assert len(rej) == 3  # row 1: its impossible date, then too little left to link on


def test_date_formats_and_today_are_applied(tmp_path: Path) -> None:
    rows = [dict(GOOD_2, source_record_id="a", date_of_birth="12/31/1985"),
            dict(GOOD_2, source_record_id="b", date_of_birth="2030-01-01")]
    src = _write_csv(tmp_path / "in.csv", rows)
    plain = tokenize_file(src, secret=SECRET, out=tmp_path / "plain.jsonl")
    # undeclared US date dropped (leaving a name only: refused), future date accepted
    assert (plain.written, plain.rejected) == (1, 1)
    declared = tokenize_file(src, secret=SECRET, out=tmp_path / "d.jsonl", date_formats=["%m/%d/%Y"],
                             today=dt.date(2024, 1, 1))
    assert (declared.written, declared.rejected) == (1, 1)
    assert _read_output(tmp_path / "d.jsonl")[0]["source_record_id"] == "a"
    rej = _read_rejects(declared.rejects)  # type: ignore[arg-type]
    assert rej[0]["row"] == "2" and rej[0]["field"] == "date_of_birth" and "future" in rej[0]["reason"]
    assert rej[1]["row"] == "2" and "too little to link on" in rej[1]["reason"]
    assert {r["outcome"] for r in rej} == {"refused"}
    # the declared US date tokenizes like the ISO date
    iso = Tokenizer(SECRET).tokenize(dict(GOOD_2, source_record_id="a"))
    assert _read_output(tmp_path / "d.jsonl")[0]["tokens"] == iso["tokens"]


def test_progress_callback(tmp_path: Path) -> None:
    seen: list[int] = []
    tokenize_file(_write_csv(tmp_path / "in.csv", ROWS), secret=SECRET, out=tmp_path / "o.jsonl",
                  progress=seen.append)
    assert sum(seen) == len(ROWS)


def test_missing_source_record_id_column_raises(tmp_path: Path) -> None:
    cols = [c for c in COLUMNS if c != "source_record_id"]
    srcs = (_write_csv(tmp_path / "in.csv", ROWS, cols), _write_parquet(tmp_path / "in.parquet", ROWS, cols))
    for src in srcs:
        with pytest.raises(InvalidInput, match="source_record_id"):
            tokenize_file(src, secret=SECRET, out=tmp_path / "o.jsonl")


def test_missing_attribute_column_raises(tmp_path: Path) -> None:
    src = _write_csv(tmp_path / "in.csv", ROWS)
    with pytest.raises(InvalidInput, match="ward"):
        tokenize_file(src, secret=SECRET, out=tmp_path / "o.jsonl", attributes=["clinic", "ward"])


def test_identifier_column_as_attribute_raises(tmp_path: Path) -> None:
    src = _write_csv(tmp_path / "in.csv", ROWS)
    with pytest.raises(InvalidInput):
        tokenize_file(src, secret=SECRET, out=tmp_path / "o.jsonl", attributes=["email"])


def test_no_identifier_columns_raises(tmp_path: Path) -> None:
    src = _write_csv(tmp_path / "in.csv", ROWS, ["source_record_id", "clinic"])
    with pytest.raises(InvalidInput):
        tokenize_file(src, secret=SECRET, out=tmp_path / "o.jsonl")


def test_unsupported_and_unreadable_inputs_raise(tmp_path: Path) -> None:
    xlsx = tmp_path / "in.xlsx"
    xlsx.write_bytes(b"PK\x03\x04")
    with pytest.raises(InvalidInput):
        tokenize_file(xlsx, secret=SECRET, out=tmp_path / "o.jsonl")
    bad_pq = tmp_path / "bad.parquet"
    bad_pq.write_bytes(b"not parquet at all")
    with pytest.raises(InvalidInput):
        tokenize_file(bad_pq, secret=SECRET, out=tmp_path / "o.jsonl")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InvalidInput):
        tokenize_file(empty, secret=SECRET, out=tmp_path / "o.jsonl")


def test_undeclared_columns_ignored_and_reported(tmp_path: Path) -> None:
    cols = [*COLUMNS, "mothers_maiden_name"]
    rows = [dict(GOOD_1, mothers_maiden_name="Featherstonehaugh")]
    src = _write_csv(tmp_path / "in.csv", rows, cols)
    summary = tokenize_file(src, secret=SECRET, out=tmp_path / "o.jsonl")
    assert summary.ignored_columns == ["clinic", "notes", "mothers_maiden_name"]
    data = (tmp_path / "o.jsonl").read_bytes()
    assert b"Featherstonehaugh" not in data and b"north" not in data and b"confidential" not in data


def test_csv_with_bom(tmp_path: Path) -> None:
    src = tmp_path / "bom.csv"
    src.write_bytes("\ufeffsource_record_id,given_name,family_name,date_of_birth\nr1,Ann,Lee,1990-01-02\n"
                    .encode())
    summary = tokenize_file(src, secret=SECRET, out=tmp_path / "o.jsonl")
    assert (summary.written, summary.rejected) == (1, 0)


# --- Tokenizer.tokenize --------------------------------------------------------------------


def test_tokenizer_is_deterministic_and_keyed() -> None:
    row = {k: v for k, v in GOOD_1.items() if k not in ("clinic", "notes")}
    a = Tokenizer(SECRET).tokenize(row)
    b = Tokenizer(SECRET, cache_size=1).tokenize(row)
    assert a == b
    assert a == Tokenizer(SECRET).tokenize(dict(row))
    c = Tokenizer(OTHER_SECRET).tokenize(row)
    assert set(c["tokens"]) == set(a["tokens"])
    assert all(a["tokens"][n] != c["tokens"][n] for n in a["tokens"])
    assert Tokenizer(SECRET).key_id == key_id(SECRET)


def test_tokenizer_normalization_variants_give_same_tokens() -> None:
    t = Tokenizer(SECRET)
    a = t.tokenize({"source_record_id": "1", "given_name": "José", "family_name": "O'Brien",
                    "date_of_birth": "1980-05-06"})
    b = t.tokenize({"source_record_id": "2", "given_name": "  JOSE ", "family_name": "obrien",
                    "date_of_birth": "1980-05-06"})
    assert a["tokens"] == b["tokens"]


def test_tokenizer_cache_eviction_keeps_results() -> None:
    t = Tokenizer(SECRET, cache_size=2)
    first = t.tokenize({"source_record_id": "1", "given_name": "Ann", "family_name": "Lee",
                        "date_of_birth": "1990-01-02"})
    t.tokenize({"source_record_id": "2", "given_name": "Bo", "family_name": "Ng", "email": "b@n.io"})
    again = t.tokenize({"source_record_id": "1", "given_name": "Ann", "family_name": "Lee",
                        "date_of_birth": "1990-01-02"})
    assert first == again


def test_tokenizer_rejection_lists_all_problems() -> None:
    with pytest.raises(RecordRejected) as info:
        Tokenizer(SECRET).tokenize({"source_record_id": "", "given_name": "Ann", "national_id": "12",
                                    "date_of_birth": "x", "research_consent": "perhaps"}, row=9)
    fields = sorted(p.field or "" for p in info.value.problems)
    assert fields == ["date_of_birth", "national_id", "research_consent", "source_record_id"]
    assert all(p.row == 9 for p in info.value.problems)
    assert "Ann" not in str(info.value)


def test_tokenizer_too_little_to_link() -> None:
    with pytest.raises(RecordRejected) as info:
        Tokenizer(SECRET).tokenize({"source_record_id": "s", "given_name": "Ann", "family_name": "Lee"})
    assert "too little to link on" in info.value.problems[0].reason
    assert info.value.problems[0].source_record_id == "s"


def test_source_record_id_too_long_or_unprintable() -> None:
    t = Tokenizer(SECRET)
    base = {"given_name": "Ann", "family_name": "Lee", "date_of_birth": "1990-01-02"}
    for sid in ("x" * 129, "a\x00b"):
        with pytest.raises(RecordRejected) as info:
            t.tokenize(dict(base, source_record_id=sid))
        assert info.value.problems[0].field == "source_record_id"
    assert t.tokenize(dict(base, source_record_id=" " + "x" * 128 + " "))["source_record_id"] == "x" * 128


@pytest.mark.parametrize(("raw", "expected"), [
    ("yes", True), ("TRUE", True), ("1", True), ("n", False), ("False", False), ("0", False),
    ("", None), (None, None), ("  ", None),
])
def test_parse_consent(raw: str | None, expected: bool | None) -> None:
    assert parse_consent(raw) is expected


# --- known bugs ----------------------------------------------------------------------------


def test_parquet_with_typed_columns_does_not_crash(tmp_path: Path) -> None:
    src = tmp_path / "typed.parquet"
    pq.write_table(pa.table({"source_record_id": ["t1"], "given_name": ["Ann"], "family_name": ["Lee"],
                             "date_of_birth": [dt.date(1990, 1, 2)], "research_consent": [True]}), src)
    try:
        summary = tokenize_file(src, secret=SECRET, out=tmp_path / "o.jsonl")
    except InvalidInput:
        return
    assert summary.rows == summary.written + summary.rejected == 1


def test_rejects_file_never_contains_plaintext_dob(tmp_path: Path) -> None:
    dob = "\u0661\u0669\u0669\u0660-\u0660\u0661-\u0660\u0662"
    src = _write_csv(tmp_path / "in.csv", [dict(GOOD_2, date_of_birth=dob)])
    summary = tokenize_file(src, secret=SECRET, out=tmp_path / "o.jsonl")
    assert summary.rows == 1
    assert dob.encode() not in (tmp_path / "o.jsonl.rejects.csv").read_bytes()


def test_fields_outside_evidence_groups_do_not_count_as_evidence() -> None:
    """middle_name, sex and city never make a record linkable on their own."""
    tok = Tokenizer(bytes(range(32)))
    with pytest.raises(RecordRejected, match="too little to link on"):
        tok.tokenize({"source_record_id": "a", "given_name": "Ann", "family_name": "Lee",
                      "middle_name": "Q", "sex": "F", "city": "Boston"})
    ok = tok.tokenize({"source_record_id": "b", "given_name": "Ann", "date_of_birth": "1990-01-02"})
    assert "date_of_birth" in ok["tokens"] and "given_name" in ok["tokens"]


# --- field-level intake: a malformed field is dropped, the record kept ------------------------

INTAKE_COLUMNS = ["source_record_id", "given_name", "family_name", "date_of_birth", "sex",
                  "national_id", "postal_code", "address_line", "phone", "email",
                  "research_consent"]
BASE = {"source_record_id": "w1", "given_name": "Ann", "family_name": "Lee",
        "date_of_birth": "1990-01-02"}


def _intake(tmp_path: Path, rows: list[dict[str, str]], **kw: Any
            ) -> tuple[Any, list[dict[str, Any]], list[dict[str, str]]]:
    src = _write_csv(tmp_path / "in.csv", rows, INTAKE_COLUMNS)
    summary = tokenize_file(src, secret=SECRET, out=tmp_path / "out.jsonl", **kw)
    assert summary.rows == summary.written + summary.rejected == len(rows)
    return summary, _read_output(tmp_path / "out.jsonl"), _read_rejects(summary.rejects)


def _kept_without(tmp_path: Path, field: str, value: str, fragment: str, **kw: Any) -> None:
    """One row with ``field`` malformed: kept without that field, one 'dropped' line."""
    summary, records, warnings = _intake(tmp_path, [dict(BASE, **{field: value})], **kw)
    assert (summary.written, summary.rejected, summary.kept_with_warnings) == (1, 0, 1)
    assert summary.dropped == 1 and summary.repaired == 0
    assert not any(t == field or t.startswith(field + ".") for t in records[0]["tokens"])
    assert {"given_name", "family_name", "date_of_birth"} <= set(records[0]["tokens"])
    assert [(w["row"], w["source_record_id"], w["field"], w["outcome"]) for w in warnings] == [
        ("1", "w1", field, "dropped")]
    assert fragment in warnings[0]["reason"], warnings[0]["reason"]
    assert value not in (tmp_path / "out.jsonl.rejects.csv").read_text(encoding="utf-8")


def _tokens_of(field: str, value: str) -> dict[str, str]:
    return Tokenizer(SECRET, zero_pad=False).tokenize(dict(BASE, **{field: value}))["tokens"]


@pytest.mark.parametrize(("raw", "padded", "note"), [
    ("2139", "02139", "repaired: zero-padded 4-digit ZIP to 5 digits"),
    ("501", "00501", "repaired: zero-padded 3-digit ZIP to 5 digits"),
    ("2139-1234", "02139-1234", "repaired: zero-padded 8-digit ZIP+4 to 9 digits"),
])
def test_short_zip_is_zero_padded_and_reported(tmp_path: Path, raw: str, padded: str,
                                               note: str) -> None:
    summary, records, warnings = _intake(tmp_path, [dict(BASE, postal_code=raw)])
    assert (summary.written, summary.repaired, summary.kept_with_warnings) == (1, 1, 0)
    assert records[0]["tokens"] == _tokens_of("postal_code", padded)
    assert [(w["field"], w["outcome"], w["reason"]) for w in warnings] == [
        ("postal_code", "repaired", note)]


def test_four_digit_zip_dropped_when_zero_pad_is_off(tmp_path: Path) -> None:
    _kept_without(tmp_path, "postal_code", "2139", "expected 5 or 9 digits, got 4",
                  zero_pad=False)


def test_six_digit_zip_dropped(tmp_path: Path) -> None:
    _kept_without(tmp_path, "postal_code", "213945", "expected 5 or 9 digits, got 6")


@pytest.mark.parametrize(("raw", "padded"), [("1451137", "001451137"), ("12345678", "012345678")])
def test_short_ssn_is_zero_padded_and_reported(tmp_path: Path, raw: str, padded: str) -> None:
    summary, records, warnings = _intake(tmp_path, [dict(BASE, national_id=raw)])
    assert (summary.written, summary.repaired, summary.kept_with_warnings) == (1, 1, 0)
    assert records[0]["tokens"] == _tokens_of("national_id", padded)
    assert [(w["field"], w["outcome"]) for w in warnings] == [("national_id", "repaired")]
    assert warnings[0]["reason"] == f"repaired: zero-padded {len(raw)}-digit SSN to 9 digits"


def test_short_ssn_dropped_when_zero_pad_is_off(tmp_path: Path) -> None:
    _kept_without(tmp_path, "national_id", "1451137", "expected 9 digits, got 7", zero_pad=False)


def test_ssn_invalid_after_padding_dropped(tmp_path: Path) -> None:
    # 9004242 -> 009004242: group 00 is never issued
    _kept_without(tmp_path, "national_id", "9004242", "not a valid SSN once zero-padded")


def test_malformed_email_dropped(tmp_path: Path) -> None:
    _kept_without(tmp_path, "email", "ann.lee@example", "not an email address")


def test_impossible_date_dropped(tmp_path: Path) -> None:
    row = dict(BASE, date_of_birth="19510231", national_id="234-56-7891")
    summary, records, warnings = _intake(tmp_path, [row], date_formats=["%Y%m%d"])
    assert (summary.written, summary.kept_with_warnings) == (1, 1)
    assert "date_of_birth" not in records[0]["tokens"] and "national_id" in records[0]["tokens"]
    assert [(w["field"], w["outcome"], w["reason"]) for w in warnings] == [
        ("date_of_birth", "dropped", "not a valid calendar date")]


def test_future_date_dropped(tmp_path: Path) -> None:
    row = dict(BASE, date_of_birth="2030-01-01", phone="617-555-0142")
    summary, records, warnings = _intake(tmp_path, [row], today=dt.date(2024, 1, 1))
    assert (summary.written, summary.kept_with_warnings) == (1, 1)
    assert "date_of_birth" not in records[0]["tokens"] and "phone" in records[0]["tokens"]
    assert [(w["field"], w["outcome"]) for w in warnings] == [("date_of_birth", "dropped")]
    assert "future" in warnings[0]["reason"]


def test_bad_phone_dropped(tmp_path: Path) -> None:
    _kept_without(tmp_path, "phone", "55512", "expected 7 to 15 digits, got 5")


def test_bad_sex_dropped(tmp_path: Path) -> None:
    _kept_without(tmp_path, "sex", "Q", "expected M, F, X or unknown")


def test_record_left_with_too_little_evidence_is_refused_with_its_dropped_fields(
        tmp_path: Path) -> None:
    row = dict(BASE, date_of_birth="1990-02-30", national_id="34567", email="ann@", sex="M")
    summary, records, warnings = _intake(tmp_path, [row, dict(BASE, source_record_id="w2")])
    assert (summary.written, summary.rejected, summary.kept_with_warnings) == (1, 1, 0)
    assert [r["source_record_id"] for r in records] == ["w2"]
    assert [(w["row"], w["source_record_id"], w["field"], w["outcome"]) for w in warnings] == [
        ("1", "w1", "date_of_birth", "refused"), ("1", "w1", "national_id", "refused"),
        ("1", "w1", "email", "refused"), ("1", "w1", "", "refused")]
    assert "too little to link on: has ['name'] once malformed fields were dropped" in \
        warnings[-1]["reason"]


def test_too_little_evidence_with_only_a_repair_is_not_blamed_on_dropping() -> None:
    with pytest.raises(RecordRejected) as info:
        Tokenizer(SECRET).tokenize({"source_record_id": "z", "postal_code": "2139"})
    assert [p.field for p in info.value.problems] == [None]
    assert "has ['address'], needs" in info.value.problems[0].reason


def test_malformed_consent_refuses_the_record(tmp_path: Path) -> None:
    # never guess consent: a good record with an unreadable consent flag is not written
    row = dict(BASE, national_id="234-56-7891", research_consent="maybe")
    summary, records, warnings = _intake(tmp_path, [row])
    assert (summary.written, summary.rejected) == (0, 1) and records == []
    assert [(w["field"], w["outcome"]) for w in warnings] == [("research_consent", "refused")]


def test_missing_source_record_id_refuses_even_with_good_fields(tmp_path: Path) -> None:
    summary, _, warnings = _intake(tmp_path, [dict(BASE, source_record_id="", phone="12")])
    assert (summary.written, summary.rejected) == (0, 1)
    assert [(w["field"], w["outcome"]) for w in warnings] == [
        ("source_record_id", "refused"), ("phone", "refused")]


def test_warnings_file_never_holds_a_plaintext_value(tmp_path: Path) -> None:
    raw = {"postal_code": "8417", "national_id": "7654321", "email": "zed.quill@@example.org",
           "date_of_birth": "19510231", "phone": "55512", "sex": "Qx"}
    rows = [dict(BASE, source_record_id="p1", **raw),
            dict(BASE, source_record_id="p2", national_id="9004242", postal_code="987654"),
            {"source_record_id": "p3", "given_name": "Wilhelmina", "date_of_birth": "19880230",
             "research_consent": "perhaps-later"}]
    summary, _, warnings = _intake(tmp_path, rows, date_formats=["%Y%m%d"])
    assert summary.rejected == 1 and summary.repaired == 2 and summary.kept_with_warnings == 2
    text = (tmp_path / "out.jsonl.rejects.csv").read_text(encoding="utf-8")
    values = [*raw.values(), "08417", "007654321", "zed.quill", "1951-02-31", "9004242",
              "009004242", "987654", "Wilhelmina", "WILHELMINA", "19880230", "perhaps-later",
              "Ann", "ANN", "Lee", "LEE", "1990-01-02"]
    assert [v for v in values if v in text] == []
    assert {w["outcome"] for w in warnings} == {"repaired", "dropped", "refused"}


def test_tokenize_with_warnings_and_the_memo() -> None:
    t = Tokenizer(SECRET, cache_size=len(TOKEN_NAMES))  # tiny memo: evictions happen
    row = dict(BASE, postal_code="2139", email="nope", phone="617-555-0142")
    first, w1 = t.tokenize_with_warnings(row, row=1)
    for i in range(2, 6):  # memo hits and misses give the same record and warnings
        other, _ = t.tokenize_with_warnings(dict(BASE, source_record_id=f"x{i}",
                                                 postal_code=f"{i}139", email=f"a{i}@b"), row=i)
        again, w2 = t.tokenize_with_warnings(row, row=i)
        assert again == first
        assert [(w.field, w.outcome, w.reason) for w in w2] == [
            (w.field, w.outcome, w.reason) for w in w1]
    assert [(w.row, w.source_record_id, w.field, w.outcome) for w in w1] == [
        (1, "w1", "postal_code", "repaired"), (1, "w1", "email", "dropped")]
    assert t.tokenize(row) == first
    assert Tokenizer(SECRET).tokenize_with_warnings(BASE)[1] == []


FEBRL = PUBLIC_LINKAGE / "febrl1" / "raw"


@pytest.mark.parametrize("name", ["orig.csv", "dups.csv"])
def test_raw_febrl1_tokenizes_at_least_99_percent(tmp_path: Path, name: str) -> None:
    if not (FEBRL / name).exists():
        pytest.skip(f"{FEBRL} is absent")
    summary = tokenize_file(FEBRL / name, secret=SECRET, out=tmp_path / "o.jsonl",
                            date_formats=["%Y%m%d"])
    assert summary.rows == summary.written + summary.rejected == 500
    assert summary.written >= 0.99 * summary.rows
    assert summary.repaired > 0  # 4-digit postcodes, 7-digit ids
    warnings = _read_rejects(summary.rejects)  # type: ignore[arg-type]
    assert {w["outcome"] for w in warnings} <= {"repaired", "dropped", "refused"}
    # with zero-padding off the ids and postcodes are dropped, yet names + dates still link
    off = tokenize_file(FEBRL / name, secret=SECRET, out=tmp_path / "off.jsonl",
                        date_formats=["%Y%m%d"], zero_pad=False)
    assert off.repaired == 0 and off.kept_with_warnings >= 0.9 * off.rows


_VALUE = st.one_of(
    st.sampled_from(["", " ", "Ann", "Lee", "1990-01-02", "19900102", "1990-02-30", "2139",
                     "02139", "213945", "1451137", "9004242", "234-56-7891", "ann@example.org",
                     "ann@", "617-555-0142", "555", "M", "Q", "yes", "maybe", "UNKNOWN"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=12))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.fixed_dictionaries({c: _VALUE for c in INTAKE_COLUMNS[1:]},
                                      optional={"source_record_id": st.sampled_from(
                                          ["a", "b", "c", "", "d", "e"])}),
                min_size=1, max_size=12),
       st.booleans())
def test_every_row_is_written_or_refused(tmp_path: Path, rows: list[dict[str, str]],
                                         zero_pad: bool) -> None:
    d = tmp_path / f"p{len(list(tmp_path.iterdir()))}"
    d.mkdir()
    summary = tokenize_file(_write_csv(d / "in.csv", rows, INTAKE_COLUMNS), secret=SECRET,
                            out=d / "o.jsonl", zero_pad=zero_pad)
    assert summary.rows == len(rows)
    assert summary.written + summary.rejected == summary.rows
    written = _read_output(d / "o.jsonl")
    assert len(written) == summary.written
    warnings = _read_rejects(d / "o.jsonl.rejects.csv")
    refused = _refused_rows(warnings)
    assert len(refused) == summary.rejected
    kept = {int(w["row"]) for w in warnings if w["outcome"] != "refused"}
    assert not kept & refused
    assert sum(w["outcome"] == "repaired" for w in warnings) == summary.repaired
    assert len({int(w["row"]) for w in warnings if w["outcome"] == "dropped"}) == \
        summary.kept_with_warnings
