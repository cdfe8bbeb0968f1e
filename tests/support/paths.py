"""Where things are: the repository root and the public linkage data sets next to it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository root (holds ``mpi/``, ``api/``, ``tests/``, ``docs/``)."""

PUBLIC_LINKAGE = ROOT.parent / "shared" / "data" / "public-linkage"
"""The public record-linkage data sets (FEBRL), when present next to the repository."""
