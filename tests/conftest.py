"""Fixtures shared by every test folder (pytest loads this file itself: never import it).

Helpers that are not fixtures (world builders, token records, servers, paths) live in
``tests/support``; fixtures that only one folder uses live in that folder's ``conftest.py``;
fixtures that only one module uses stay in that module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.api import World, build_world, close_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """A fresh world per test: the real app over a real registry in ``tmp_path``, one principal
    per role, two agencies (no records yet)."""
    w = build_world(tmp_path)
    yield w
    close_world(w)
