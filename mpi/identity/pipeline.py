"""In-memory plumbing from plaintext to the linkage executor's input, for training and tests.

Owns: turning synthetic plaintext rows into token records (agency side) and into the Arrow
table the linkage executors read (service side), exactly as the real path would. Must not: run
SQL or import splink.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from mpi.agency.schema import TOKEN_COLUMNS
from mpi.agency.tokenizer import RecordRejected, Tokenizer
from mpi.identity.intake import ParsedRecord, parse_record

_POS = {c: i for i, c in enumerate(TOKEN_COLUMNS)}


def demo_secret(seed: int) -> bytes:
    """A reproducible, clearly non-production linkage secret for demos and fixtures."""
    return hashlib.sha256(f"mpi-demo-linkage-secret/{seed}".encode()).digest()


def tokenize_rows(rows: Iterable[Mapping[str, str]], *, secret: bytes,
                  attributes: Sequence[str] = ()) -> tuple[list[dict[str, Any]], int]:
    """Token records for plaintext rows, and how many rows were rejected."""
    tok = Tokenizer(secret)
    out, rejected = [], 0
    for i, row in enumerate(rows, start=1):
        attrs = {a: row[a] for a in attributes if row.get(a)}
        try:
            out.append(tok.tokenize(row, row=i, attributes=attrs))
        except RecordRejected:
            rejected += 1
    return out, rejected


def parse_all(records: Iterable[Any], *, server_secret: bytes) -> list[ParsedRecord]:
    """Re-key token records as the service does (invalid ones are skipped)."""
    out = []
    for i, rec in enumerate(records, start=1):
        p = parse_record(rec, row=i, server_secret=server_secret, accepted_key_ids=None)
        if isinstance(p, ParsedRecord):
            out.append(p)
    return out


def model_table(parsed: Sequence[ParsedRecord], *, columns: Sequence[str],
                ids: Sequence[int] | None = None) -> pa.Table:
    """``unique_id`` + one int64 column per model column (null where missing)."""
    matrix = np.stack([p.tokens for p in parsed]) if parsed else np.zeros((0, len(TOKEN_COLUMNS)),
                                                                        dtype=np.int64)
    data: dict[str, Any] = {"unique_id": pa.array(ids if ids is not None
                                                  else range(1, len(parsed) + 1), pa.int64())}
    for c in columns:
        col = matrix[:, _POS[c]]
        data[c] = pa.array(col, pa.int64(), mask=col == 0)
    return pa.table(data)
