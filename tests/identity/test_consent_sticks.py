"""An opt-out survives a refresh that does not carry the consent field (issue 16, finding 8).

Owns: the attacker's (here: the routine refresh's) test: a record enrolled with
``research_consent: false`` and re-sent later without the field kept its opt-out? It did not:
the refresh stored ``null`` and the person became releasable again. A refresh without the
field never changes the stored consent; an explicit value does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mpi.config import Settings
from mpi.identity.pipeline import demo_secret, tokenize_rows
from mpi.identity.registry import Registry
from mpi.synth import generate

ROWS, _TRUTH = generate(people=20, agencies=1, seed=3)
AGENCY = sorted(ROWS)[0]
TOKENS = tokenize_rows(ROWS[AGENCY], secret=demo_secret(1))[0]


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Registry]:
    """An empty registry."""
    r = Registry(Settings(data_dir=tmp_path / "data"))
    yield r
    r.close()


def _consent(reg: Registry, sid: str) -> Any:
    return reg.get_record(AGENCY, sid)["research_consent"]


def _send(reg: Registry, rec: dict[str, Any]) -> str:
    res = reg.enrol_records(AGENCY, [(1, rec)])
    assert not res.problems
    return res.results[0].outcome


@pytest.mark.parametrize("journaled", [True, False], ids=["single", "bulk"])
def test_a_refresh_without_the_consent_field_keeps_the_opt_out(reg: Registry,
                                                                 journaled: bool) -> None:
    base = {k: v for k, v in TOKENS[0].items() if k != "research_consent"}
    sid = base["source_record_id"]
    _send(reg, {**base, "research_consent": False})
    assert _consent(reg, sid) is False
    # the same record again, without the field: nothing changed, the opt-out stands
    assert _send(reg, base) == "unchanged"
    assert _consent(reg, sid) is False
    # a real refresh (new attributes), still without the field: the opt-out stands
    refreshed = {**base, "attributes": {"program": "snap"}}
    if journaled:
        assert _send(reg, refreshed) == "updated"
    else:  # among many records: the bulk path
        others = [{**t, "source_record_id": f"bulk-{i}"} for i, t in enumerate(TOKENS[1:])]
        res = reg.enrol_records(AGENCY, list(enumerate([refreshed, *others] * 1, start=1)))
        assert not res.problems and res.results[0].outcome == "updated"
    assert _consent(reg, sid) is False
    # it survives a restart (the stored version says so, not only memory)
    reg.store.flush_journal()
    # an explicit opt-in is a change the agency made: it is stored
    assert _send(reg, {**refreshed, "research_consent": True}) == "updated"
    assert _consent(reg, sid) is True
    assert _send(reg, refreshed) == "unchanged"
    assert _consent(reg, sid) is True


def test_consent_kept_across_a_reopen(tmp_path: Path) -> None:
    """After a restart the stored consent is what a refresh without the field keeps."""
    d = tmp_path / "data"
    base = {k: v for k, v in TOKENS[0].items() if k != "research_consent"}
    r = Registry(Settings(data_dir=d))
    _send(r, {**base, "research_consent": False})
    r.close()
    r = Registry(Settings(data_dir=d))
    try:
        assert _send(r, {**base, "attributes": {"program": "wic"}}) == "updated"
        assert r.get_record(AGENCY, base["source_record_id"])["research_consent"] is False
    finally:
        r.close()
