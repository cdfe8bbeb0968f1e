"""Fixtures of the research-extract tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.api import A, B, World, build_world, close_world
from tests.support.extracts import DICTIONARY, RECORDS, add_principal, extract_flow


@pytest.fixture
def xw(tmp_path: Path) -> Iterator[World]:
    """A world with records (attributes + consent) at both agencies, dictionaries, approvers."""
    w = build_world(tmp_path)
    for agency in (A, B):
        assert w.post_records(agency, RECORDS[agency]).status_code == 200
        r = w.client.put("/v1/datasets/enrolment", headers=w.h(agency),
                         json={"description": "Program enrolment", "attributes": DICTIONARY})
        assert r.status_code == 200, r.text
    add_principal(w, "approver_b", "approver", B)
    add_principal(w, "researcher_2", "researcher")
    yield w
    extract_flow(w).wait(60)
    close_world(w)
