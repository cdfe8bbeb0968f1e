"""Reading tokenized files (JSONL or Parquet) as the service receives them.

Owns: turning a tokens file into (row number, record object) pairs in chunks, with a clear
error for a malformed file or line. Must not: validate token contents (intake.py does).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mpi.errors import InvalidInput, Problem

Row = tuple[int, Any]


def iter_chunks(path: Path, *, chunk: int) -> Iterator[tuple[list[Row], list[Problem]]]:
    """Yield (rows, problems) chunks; a bad JSON line becomes a problem naming its row."""
    if path.suffix.lower() == ".parquet":
        yield from _parquet_chunks(path, chunk=chunk)
        return
    rows: list[Row] = []
    problems: list[Problem] = []
    try:
        with path.open(encoding="utf-8") as fh:
            for i, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append((i, json.loads(line)))
                except json.JSONDecodeError as exc:
                    problems.append(Problem(i, None, f"not valid JSON ({exc.msg} at column "
                                                     f"{exc.colno})"))
                if len(rows) + len(problems) >= chunk:
                    yield rows, problems
                    rows, problems = [], []
    except UnicodeDecodeError:
        raise InvalidInput(f"{path.name}: not UTF-8 JSONL") from None
    except FileNotFoundError:
        raise InvalidInput(f"{path.name}: no such file") from None
    if rows or problems:
        yield rows, problems


def _parquet_chunks(path: Path, *, chunk: int) -> Iterator[tuple[list[Row], list[Problem]]]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInput(f"{path.name}: not a readable Parquet file ({exc})") from None
    names = pf.schema_arrow.names
    if "source_record_id" not in names:
        raise InvalidInput(f"{path.name}: missing column 'source_record_id'")
    base = {"source_record_id", "schema_version", "attributes", "research_consent"}
    token_cols = [n for n in names if n not in base]
    row_no = 0
    for batch in pf.iter_batches(batch_size=chunk):
        data = batch.to_pydict()
        rows: list[Row] = []
        problems: list[Problem] = []
        for i in range(batch.num_rows):
            row_no += 1
            rec: dict[str, Any] = {
                "source_record_id": data["source_record_id"][i],
                "schema_version": data.get("schema_version", [None] * batch.num_rows)[i],
                "tokens": {c: data[c][i] for c in token_cols if data[c][i] is not None},
            }
            attrs = data.get("attributes", [None] * batch.num_rows)[i]
            if attrs:
                try:
                    rec["attributes"] = json.loads(attrs)
                except json.JSONDecodeError:
                    problems.append(Problem(row_no, "attributes", "not valid JSON"))
                    continue
            consent = data.get("research_consent", [None] * batch.num_rows)[i]
            if consent is not None:
                rec["research_consent"] = consent
            rows.append((row_no, rec))
        yield rows, problems
