"""The agency-side tokenizer: plaintext CSV/Parquet in, token-only JSONL/Parquet out.

Owns: reading agency files, validating rows, writing tokenized records and the warnings file
(``OUTPUT.rejects.csv``: refused rows, dropped and repaired fields). Intake is field-level: a
malformed identifier is dropped and reported, and the record is kept while enough evidence
remains. Runs on the agency's machine with the linkage secret; the service never calls it.
Must not: write any plaintext identifier to the output, the warnings file or the console.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mpi.agency.normalize import (
    FieldError,
    derive_field_variants,
    derive_record_variants,
    normalize_field,
    zero_pad_repair,
)
from mpi.agency.schema import (
    EVIDENCE_GROUPS,
    FIELD_NAMES,
    MIN_EVIDENCE,
    SCHEMA_VERSION,
    evidence_groups_present,
)
from mpi.agency.tokens import TokenMaker, key_id
from mpi.errors import InvalidInput, Problem

RESERVED_COLUMNS = ("source_record_id", "research_consent")
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})
MAX_SOURCE_ID_LEN = 128
# A record with more evidence-group fields than the largest group has (2) spans at least two
# groups, so only sparse records need the full evidence check.
_GROUPED = frozenset(f for fs in EVIDENCE_GROUPS.values() for f in fs)
_ENOUGH_FIELDS = max(len(fs) for fs in EVIDENCE_GROUPS.values()) + 1

# Outcomes in the warnings file: the record was not written / a field was dropped from a
# written record / a field was zero-padded in a written record.
REFUSED, DROPPED, REPAIRED = "refused", "dropped", "repaired"
WARNINGS_HEADER = ("row", "source_record_id", "field", "outcome", "reason")


@dataclass(frozen=True, slots=True)
class FieldWarning:
    """A field of a kept record that was dropped (malformed) or repaired (zero-padded).

    ``reason`` names lengths and rules, never the value.
    """

    row: int | None
    source_record_id: str | None
    field: str
    outcome: str
    reason: str


class _Repaired(NamedTuple):
    """Memo entry of a value that was zero-padded: its tokens and what was done."""

    tokens: dict[str, str]
    reason: str


class RecordRejected(ValueError):
    """A row that cannot be tokenized; ``problems`` say which field and why.

    ``problems`` holds the refusal causes and, to explain them, the fields that were dropped.
    """

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.describe() for p in problems))
        self.problems = problems


def parse_consent(raw: str | None) -> bool | None:
    """Parse an optional research-consent flag (true/false/yes/no/1/0); blank is unknown."""
    if raw is None:
        return None
    text = raw.strip().lower()
    if not text:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise FieldError("research_consent", "expected true/false, yes/no or 1/0")


def check_source_record_id(raw: str | None) -> str:
    """Validate a source record id and return it stripped."""
    text = (raw or "").strip()
    if not text:
        raise FieldError("source_record_id", "missing")
    if len(text) > MAX_SOURCE_ID_LEN or not text.isprintable():
        raise FieldError("source_record_id", f"must be 1-{MAX_SOURCE_ID_LEN} printable characters")
    return text


class Tokenizer:
    """Turns plaintext rows into token records under one linkage secret."""

    def __init__(self, secret: bytes, *, date_formats: Sequence[str] = (),
                 today: dt.date | None = None, cache_size: int = 500_000,
                 zero_pad: bool = True) -> None:
        self._secret = secret
        self.key_id = key_id(secret)
        self._date_formats = tuple(date_formats)
        self._today = today
        self.zero_pad = zero_pad
        self._token = TokenMaker(secret, kid=self.key_id, memo=cache_size)
        # One memo per field: raw value -> its tokens (all variants; {} when missing), its
        # FieldError (dropped) or _Repaired (zero-padded tokens and the note).
        self._fields: dict[str, dict[str, dict[str, str] | FieldError | _Repaired]] = {
            f: {} for f in FIELD_NAMES}
        self._cache_size = cache_size
        # Normalized names by raw value, for the token that combines them (name_set).
        self._names: dict[str, dict[str, str]] = {"given_name": {}, "family_name": {}}

    def _field_tokens(self, field: str, value: str) -> dict[str, str] | FieldError | _Repaired:
        """Tokens of one raw field value (all its variants), memoized per tokenizer."""
        result: dict[str, str] | FieldError | _Repaired
        try:
            norm = normalize_field(field, value, date_formats=self._date_formats,
                                   today=self._today, zero_pad=self.zero_pad)
        except FieldError as exc:
            exc.__traceback__ = None  # memoized: do not keep the frames alive
            result = exc
        else:
            toks = {} if norm is None else {
                name: self._token(name, v) for name, v in derive_field_variants(field, norm).items()}
            names = self._names.get(field)
            if names is not None and norm is not None:
                if len(names) >= self._cache_size // len(FIELD_NAMES):
                    names.clear()
                names[value] = norm
            note = zero_pad_repair(field, value) if self.zero_pad and toks else None
            result = _Repaired(toks, f"repaired: {note}") if note else toks
        memo = self._fields[field]
        if len(memo) >= self._cache_size // len(FIELD_NAMES):
            memo.clear()
        memo[value] = result
        return result

    def _combined(self, raw: Mapping[str, str | None]) -> dict[str, str]:
        """Tokens of the variants that combine fields (the unordered name pair)."""
        values = {}
        for fname, names in self._names.items():
            value = raw.get(fname) or ""
            norm = names.get(value)
            if norm is None:  # evicted from the memo since: normalize again
                self._field_tokens(fname, value)
                norm = names[value]
            values[fname] = norm
        return {name: self._token(name, v) for name, v in derive_record_variants(values).items()}

    def tokenize(self, raw: Mapping[str, str | None], *, row: int | None = None,
                 attributes: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Tokenize one plaintext row (malformed fields dropped); raise RecordRejected when
        the record cannot be kept. See tokenize_with_warnings for the dropped fields."""
        return self.tokenize_with_warnings(raw, row=row, attributes=attributes)[0]

    def _identifier_tokens(
            self, raw: Mapping[str, str | None], row: int | None, sid: str | None,
    ) -> tuple[dict[str, str], set[str], list[FieldWarning]]:
        """Tokenize each identifier field of one row: its tokens, the fields that produced
        tokens, and a warning per dropped (malformed) or repaired field."""
        tokens: dict[str, str] = {}
        present: set[str] = set()
        warnings: list[FieldWarning] = []
        for fname, memo in self._fields.items():
            value = raw.get(fname)
            if not value:
                continue
            cached = memo.get(value)
            if cached is None:
                cached = self._field_tokens(fname, value)
            if isinstance(cached, dict):  # the clean path
                if cached:
                    tokens.update(cached)
                    present.add(fname)
            elif isinstance(cached, FieldError):
                warnings.append(FieldWarning(row, sid, fname, DROPPED, cached.reason))
            else:
                tokens.update(cached.tokens)
                present.add(fname)
                warnings.append(FieldWarning(row, sid, fname, REPAIRED, cached.reason))
        return tokens, present, warnings

    def tokenize_with_warnings(
            self, raw: Mapping[str, str | None], *, row: int | None = None,
            attributes: Mapping[str, Any] | None = None,
    ) -> tuple[dict[str, Any], list[FieldWarning]]:
        """Tokenize one plaintext row: the record and its dropped/repaired-field warnings.

        A malformed identifier field is dropped (not tokenized) and reported; the record is
        kept while the surviving fields still give MIN_EVIDENCE evidence groups. Raises
        RecordRejected (refusal causes plus the dropped fields) for a missing or malformed
        source_record_id, a malformed research_consent, or too little evidence.
        """
        refused: list[Problem] = []
        sid: str | None = None
        try:
            sid = check_source_record_id(raw.get("source_record_id"))
        except FieldError as exc:
            refused.append(Problem(row, exc.field, exc.reason))
        tokens, present, warnings = self._identifier_tokens(raw, row, sid)
        if "given_name" in present and "family_name" in present:
            tokens.update(self._combined(raw))
        consent: bool | None = None
        try:
            consent = parse_consent(raw.get("research_consent"))
        except FieldError as exc:
            # Consent is never guessed or dropped (privacy): a blank would read as "unknown"
            # and could let an opted-out person's record into research use. Refuse the record.
            refused.append(Problem(row, exc.field, exc.reason, sid))
        if not refused and len(present & _GROUPED) < _ENOUGH_FIELDS:
            groups = evidence_groups_present(present)
            if len(groups) < MIN_EVIDENCE:
                after = (" once malformed fields were dropped"
                         if any(w.outcome == DROPPED for w in warnings) else "")
                refused.append(Problem(
                    row, None,
                    f"too little to link on: has {groups or 'nothing'}{after}, needs at least "
                    f"{MIN_EVIDENCE} of name, date_of_birth, national_id, address, phone, email",
                    sid))
        if refused:
            dropped = [Problem(row, w.field, w.reason, sid) for w in warnings
                       if w.outcome == DROPPED]
            if refused[0].field == "source_record_id":
                raise RecordRejected([refused[0], *dropped, *refused[1:]])
            raise RecordRejected([*dropped, *refused])
        record: dict[str, Any] = {"source_record_id": sid, "schema_version": SCHEMA_VERSION,
                                  "tokens": tokens}
        if attributes:
            record["attributes"] = dict(attributes)
        if consent is not None:
            record["research_consent"] = consent
        return record, warnings


@dataclass
class TokenizeSummary:
    """What a tokenize run did."""

    rows: int = 0
    written: int = 0
    rejected: int = 0  # rows refused (not written)
    kept_with_warnings: int = 0  # rows written with at least one dropped field
    dropped: int = 0  # fields dropped from written rows
    repaired: int = 0  # fields zero-padded in written rows
    output: Path | None = None
    rejects: Path | None = None
    ignored_columns: list[str] = field(default_factory=list)
    key_id: str = ""


def _read_batches(path: Path, *, batch_rows: int = 20_000) -> tuple[list[str], Iterator[pa.RecordBatch]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InvalidInput(f"{path.name}: not a readable Parquet file ({exc})") from None
        def as_text() -> Iterator[pa.RecordBatch]:
            for b in pf.iter_batches(batch_size=batch_rows):
                yield pa.RecordBatch.from_arrays(
                    [c if pa.types.is_string(c.type) else pc.cast(c, pa.string())
                     for c in b.columns], names=b.schema.names)
        return list(pf.schema_arrow.names), as_text()
    if suffix not in (".csv", ".txt"):
        raise InvalidInput(f"{path.name}: expected a .csv or .parquet file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), None)
    except UnicodeDecodeError:
        raise InvalidInput(f"{path.name}: not UTF-8 text") from None
    if not header:
        raise InvalidInput(f"{path.name}: empty file, expected a header row")
    types = {name: pa.string() for name in header}
    try:
        reader = pacsv.open_csv(
            path, read_options=pacsv.ReadOptions(block_size=1 << 22, encoding="utf8"),
            convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=False,
                                                 quoted_strings_can_be_null=False),
            parse_options=pacsv.ParseOptions(newlines_in_values=True))
    except pa.ArrowInvalid as exc:
        raise InvalidInput(f"{path.name}: malformed CSV ({exc})") from None

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        except pa.ArrowInvalid as exc:
            raise InvalidInput(f"{path.name}: malformed CSV ({exc})") from None

    return header, batches()


def check_columns(columns: Sequence[str], *, attributes: Sequence[str], name: str) -> list[str]:
    """Validate an input header; return the columns that will be ignored."""
    if "source_record_id" not in columns:
        raise InvalidInput(f"{name}: missing required column 'source_record_id'")
    if not any(c in FIELD_NAMES for c in columns):
        raise InvalidInput(f"{name}: no identifier columns; expected some of {list(FIELD_NAMES)}")
    missing = [a for a in attributes if a not in columns]
    if missing:
        raise InvalidInput(f"{name}: --attribute columns not in the file: {missing}")
    clash = [a for a in attributes if a in FIELD_NAMES or a in RESERVED_COLUMNS]
    if clash:
        raise InvalidInput(f"{name}: identifier columns cannot be attributes: {clash}")
    keep = set(FIELD_NAMES) | set(RESERVED_COLUMNS) | set(attributes)
    return [c for c in columns if c not in keep]


class _Writer:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.parquet = out.suffix.lower() == ".parquet"
        self._rows: list[dict[str, Any]] = []
        self._fh = None if self.parquet else out.open("w", encoding="utf-8")
        self._pq: pq.ParquetWriter | None = None

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        if self._fh is not None:
            self._fh.write("".join(map(json_line, records)))
            return
        table = records_to_table(list(records))
        if self._pq is None:
            self._pq = pq.ParquetWriter(self.out, table.schema)
        self._pq.write_table(table)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        elif self._pq is None:
            pq.write_table(records_to_table([]), self.out)
        else:
            self._pq.close()


_dumps = json.JSONEncoder(separators=(",", ":")).encode


def json_line(record: Mapping[str, Any]) -> str:
    """One token record as a JSONL line (token names and tokens need no escaping)."""
    toks = ",".join(f'"{k}":"{v}"' for k, v in record["tokens"].items())
    line = (f'{{"source_record_id":{_dumps(record["source_record_id"])},'
            f'"schema_version":{int(record["schema_version"])},"tokens":{{{toks}}}')
    if "attributes" in record:
        line += f',"attributes":{_dumps(record["attributes"])}'
    if "research_consent" in record:
        line += ',"research_consent":' + ("true" if record["research_consent"] else "false")
    return line + "}\n"


def token_table_schema() -> pa.Schema:
    """The Parquet layout of tokenized records: one string column per token name."""
    from mpi.agency.schema import TOKEN_NAMES
    return pa.schema([("source_record_id", pa.string()), ("schema_version", pa.int32()),
                      *[(n, pa.string()) for n in TOKEN_NAMES],
                      ("attributes", pa.string()), ("research_consent", pa.bool_())])


def records_to_table(records: list[dict[str, Any]]) -> pa.Table:
    """Token records -> Arrow table in the Parquet layout."""
    schema = token_table_schema()
    cols: dict[str, list[Any]] = {n: [] for n in schema.names}
    for r in records:
        cols["source_record_id"].append(r["source_record_id"])
        cols["schema_version"].append(r["schema_version"])
        toks = r["tokens"]
        for n in schema.names[2:-2]:
            cols[n].append(toks.get(n))
        attrs = r.get("attributes")
        cols["attributes"].append(json.dumps(attrs, separators=(",", ":")) if attrs else None)
        cols["research_consent"].append(r.get("research_consent"))
    return pa.table(cols, schema=schema)


def tokenize_file(path: Path, *, secret: bytes, out: Path, rejects: Path | None = None,
                  attributes: Sequence[str] = (), date_formats: Sequence[str] = (),
                  today: dt.date | None = None, zero_pad: bool = True,
                  progress: Callable[[int], None] | None = None) -> TokenizeSummary:
    """Tokenize a whole file; every row is either written or listed as refused.

    The warnings file ``rejects`` (default OUTPUT.rejects.csv) has one line per refused row
    cause and per dropped or repaired field: row, source_record_id, field, outcome, reason.
    """
    columns, batches = _read_batches(path)
    ignored = check_columns(columns, attributes=attributes, name=path.name)
    tokenizer = Tokenizer(secret, date_formats=date_formats, today=today, zero_pad=zero_pad)
    rejects = rejects or out.with_name(out.name + ".rejects.csv")
    summary = TokenizeSummary(output=out, rejects=rejects, ignored_columns=ignored,
                              key_id=tokenizer.key_id)
    wanted = [c for c in columns if c in FIELD_NAMES or c in RESERVED_COLUMNS]
    writer = _Writer(out)
    with rejects.open("w", newline="", encoding="utf-8") as rej_fh:
        rej = csv.writer(rej_fh)
        rej.writerow(WARNINGS_HEADER)
        seen: dict[str, int] = {}
        for batch in batches:
            data = batch.to_pydict()
            n = batch.num_rows
            good: list[dict[str, Any]] = []
            wanted_rows = zip(*(data[c] for c in wanted), strict=True)
            attr_rows = zip(*(data[a] for a in attributes), strict=True) if attributes else None
            for _i in range(n):
                summary.rows += 1
                row_no = summary.rows
                raw = dict(zip(wanted, next(wanted_rows), strict=True))
                attrs = ({a: v for a, v in zip(attributes, next(attr_rows), strict=True)
                          if v not in (None, "")} if attr_rows is not None else {})
                try:
                    rec, warnings = tokenizer.tokenize_with_warnings(raw, row=row_no,
                                                                     attributes=attrs)
                except RecordRejected as exc:
                    summary.rejected += 1
                    for p in exc.problems:
                        rej.writerow([row_no, p.source_record_id or "", p.field or "", REFUSED,
                                      p.reason])
                    continue
                sid = rec["source_record_id"]
                if sid in seen:
                    summary.rejected += 1
                    rej.writerow([row_no, sid, "source_record_id", REFUSED,
                                  f"duplicate of row {seen[sid]} in this file"])
                    continue
                seen[sid] = row_no
                good.append(rec)
                if warnings:
                    n_dropped = 0
                    for w in warnings:
                        rej.writerow([row_no, sid, w.field, w.outcome, w.reason])
                        n_dropped += w.outcome == DROPPED
                    summary.dropped += n_dropped
                    summary.repaired += len(warnings) - n_dropped
                    summary.kept_with_warnings += n_dropped > 0
            writer.write(good)
            summary.written += len(good)
            if progress is not None:
                progress(n)
    writer.close()
    return summary
