"""Tests for mpi.tokenizer: plaintext CSV/Parquet in, token-only JSONL/Parquet out."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mpi.errors import InvalidInput
from mpi.schema import SCHEMA_VERSION, TOKEN_NAMES
from mpi.tokenizer import RecordRejected, Tokenizer, parse_consent, tokenize_file
from mpi.tokens import key_id

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
# expected rejects: row number -> (field, reason fragment)
EXPECTED_REJECTS = {
    3: ("date_of_birth", "not a valid calendar date"),
    4: ("national_id", "expected 9 digits"),
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
        return list(csv.DictReader(fh))


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
    assert summary.written == 2
    assert summary.rejected == len(EXPECTED_REJECTS)
    assert summary.rows == summary.written + summary.rejected
    assert summary.key_id == key_id(SECRET)
    assert summary.ignored_columns == ["notes"]
    assert summary.output == out
    assert summary.rejects == tmp_path / (out_name + ".rejects.csv")

    records = _read_output(out)
    assert len(records) == summary.written
    assert [r["source_record_id"] for r in records] == ["r1", "r2"]

    rejects = _read_rejects(summary.rejects)
    rejected_rows = {int(r["row"]) for r in rejects}
    assert rejected_rows == set(EXPECTED_REJECTS)
    for row_no, (field, fragment) in EXPECTED_REJECTS.items():
        hits = [r for r in rejects if int(r["row"]) == row_no]
        assert any(r["field"] == field and fragment in r["reason"] for r in hits), (row_no, hits)
    assert {r["source_record_id"] for r in rejects if int(r["row"]) == 3} == {"r3"}
    assert {r["source_record_id"] for r in rejects if int(r["row"]) == 7} == {""}

    _assert_no_plaintext(out, summary.rejects)


def test_jsonl_record_shape(tmp_path: Path) -> None:
    src = _write_csv(tmp_path / "in.csv", ROWS)
    out = tmp_path / "out.jsonl"
    tokenize_file(src, secret=SECRET, out=out, attributes=["clinic"])
    r1, r2 = _read_output(out)
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
        assert len(_read_rejects(summary.rejects)) == 2


def test_date_formats_and_today_are_applied(tmp_path: Path) -> None:
    rows = [dict(GOOD_2, source_record_id="a", date_of_birth="12/31/1985"),
            dict(GOOD_2, source_record_id="b", date_of_birth="2030-01-01")]
    src = _write_csv(tmp_path / "in.csv", rows)
    plain = tokenize_file(src, secret=SECRET, out=tmp_path / "plain.jsonl")
    assert (plain.written, plain.rejected) == (1, 1)  # US date rejected, future date accepted
    declared = tokenize_file(src, secret=SECRET, out=tmp_path / "d.jsonl", date_formats=["%m/%d/%Y"],
                             today=dt.date(2024, 1, 1))
    assert (declared.written, declared.rejected) == (1, 1)
    assert _read_output(tmp_path / "d.jsonl")[0]["source_record_id"] == "a"
    rej = _read_rejects(declared.rejects)  # type: ignore[arg-type]
    assert rej[0]["row"] == "2" and rej[0]["field"] == "date_of_birth" and "future" in rej[0]["reason"]
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
