"""The audit hash chain: intact logs verify; an edited, deleted or reordered event is named."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from api.cli import app
from mpi.audit import GENESIS, AuditChain, AuditEntry, verify
from mpi.config import Settings
from mpi.identity.registry import Registry

NOW = dt.datetime(2026, 1, 2, 3, 4, 5)


def _chain(n: int) -> list[dict[str, object]]:
    rows, _ = AuditChain(seq=0, head=GENESIS).seal(
        [AuditEntry(f"p{i}", "records.read", f"agency:a/records/{i}") for i in range(n)], now=NOW)
    return rows


def test_intact_chain_verifies() -> None:
    result = verify(_chain(5))
    assert result.ok and result.events == 5


def test_edited_event_is_named() -> None:
    rows = _chain(5)
    rows[2] = {**rows[2], "outcome": "denied"}
    result = verify(rows)
    assert not result.ok and result.first_bad_seq == 3 and "edited" in (result.reason or "")


def test_deleted_event_is_named() -> None:
    rows = _chain(5)
    del rows[1]
    result = verify(rows)
    assert not result.ok and result.first_bad_seq == 3


def test_reordered_events_are_named() -> None:
    rows = _chain(5)
    rows[1], rows[2] = rows[2], rows[1]
    result = verify(rows)
    assert not result.ok and result.first_bad_seq == 3


def test_renumbered_and_rehashed_tail_still_fails() -> None:
    """Deleting an event and renumbering the rest breaks the link to the predecessor."""
    rows = _chain(4)
    del rows[1]
    for i, r in enumerate(rows, start=1):
        r["audit_seq"] = i
    result = verify(rows)
    assert not result.ok and result.first_bad_seq == 2


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "d"
    reg = Registry(Settings(data_dir=d))
    for i in range(6):
        reg.record_audit([AuditEntry("p1", "records.read", f"agency:a/records/{i}")])
    assert reg.verify_audit().ok
    reg.close()
    return d


def _tamper(data_dir: Path, sql: str) -> None:
    con = duckdb.connect(str(data_dir / "mpi.duckdb"))
    con.execute(sql)
    con.close()


def _cli_verify(data_dir: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["audit", "verify", "--data-dir", str(data_dir)])
    return result.exit_code, result.stdout + (result.stderr or "")


def test_cli_reports_ok_on_an_intact_log(data_dir: Path) -> None:
    code, text = _cli_verify(data_dir)
    assert code == 0 and "OK" in text and "6 audit events" in text


@pytest.mark.parametrize(("sql", "first_bad"), [
    ("UPDATE audit_event SET principal = 'mallory' WHERE audit_seq = 4", 4),
    ("DELETE FROM audit_event WHERE audit_seq = 3", 4),
    ("UPDATE audit_event SET audit_seq = CASE audit_seq WHEN 2 THEN 5 WHEN 5 THEN 2 "
     "ELSE audit_seq END", 2),
], ids=["edited", "deleted", "reordered"])
def test_cli_names_the_first_bad_event_in_the_registry(data_dir: Path, sql: str,
                                                       first_bad: int) -> None:
    _tamper(data_dir, sql)
    code, text = _cli_verify(data_dir)
    assert code == 1
    assert f"audit event {first_bad}" in text
