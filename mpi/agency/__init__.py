"""The agency-side API: what an agency runs on its own machines before anything is sent.

Owns: the token contract (``schema``), normalization, keyed tokenization of a CSV
(``Tokenizer``, ``tokenize_file``) and the HTTPS client that posts token records
(``MpiClient``). Nothing here needs the service's data or secret; plaintext never leaves
these modules except as tokens. Import from ``mpi.agency`` (the names in ``__all__`` are the
stable public API); the submodules are implementation.
"""

from __future__ import annotations

from mpi.agency.client import MpiClient, ServiceError, SubmitSummary, read_api_key
from mpi.agency.schema import CONTRACT_REVISION, FIELDS, SCHEMA_VERSION, token_name
from mpi.agency.tokenizer import (
    FieldWarning,
    RecordRejected,
    Tokenizer,
    TokenizeSummary,
    tokenize_file,
)

__all__ = [
    "CONTRACT_REVISION",
    "FIELDS",
    "SCHEMA_VERSION",
    "FieldWarning",
    "MpiClient",
    "RecordRejected",
    "ServiceError",
    "SubmitSummary",
    "TokenizeSummary",
    "Tokenizer",
    "read_api_key",
    "token_name",
    "tokenize_file",
]
