"""Token records for seeded synthetic populations (what an agency would send)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mpi.identity.pipeline import demo_secret, tokenize_rows
from mpi.synth import generate

Records = dict[str, list[dict[str, Any]]]
SECRET = demo_secret(1)
"""The demo secret every test population is tokenized with unless a test says otherwise."""


def token_records(people: int, agencies: int, seed: int, *, attributes: Sequence[str] = (),
                  secret: bytes = SECRET) -> Records:
    """Token records per agency for ``generate(people, agencies, seed)``; rejected rows dropped."""
    rows, _truth = generate(people=people, agencies=agencies, seed=seed)
    return {a: tokenize_rows(r, secret=secret, attributes=attributes)[0] for a, r in rows.items()}
