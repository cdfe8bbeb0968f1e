"""`mpi consent show|record` on a stopped registry (`--data-dir`) through typer's CliRunner:
a steward (the OS user) records an opt-out and lifts it with a reason; an opt-in without a
reason is refused naming the field; the entries name the recording principal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mpi.cli.main import app
from mpi.config import Settings
from mpi.errors import InvalidInput
from mpi.identity.pipeline import demo_secret, tokenize_rows
from mpi.identity.registry import Registry
from mpi.synth import generate

runner = CliRunner()


@pytest.mark.integration  # opens the registry four times (~1.5 s)
def test_record_and_show_consent_on_a_stopped_registry(tmp_path: Path) -> None:
    d = tmp_path / "data"
    rows, _truth = generate(people=5, agencies=1, seed=4)
    tokens, _rej = tokenize_rows(next(iter(rows.values())), secret=demo_secret(1))
    reg = Registry(Settings(data_dir=d))
    try:
        res = reg.enrol_records("agency_a", list(enumerate(tokens[:1], start=1)))
        key = res.results[0].person_key
    finally:
        reg.close()
    assert key is not None
    ok = runner.invoke(app, ["consent", "record", key, "--decision", "opt_out",
                             "--date", "2026-11-01", "--data-dir", str(d)])
    assert ok.exit_code == 0, ok.output
    out = json.loads(ok.output)
    assert out["excluded_from_research"] is True
    assert out["entries"][0]["recorded_by"].startswith("os:")
    refused = runner.invoke(app, ["consent", "record", key, "--decision", "opt_in",
                                  "--data-dir", str(d)])
    assert isinstance(refused.exception, InvalidInput)
    assert refused.exception.problems[0].field == "reason"
    lifted = runner.invoke(app, ["consent", "record", key, "--decision", "opt_in", "--reason",
                                 "signed form", "--data-dir", str(d)])
    assert lifted.exit_code == 0, lifted.output
    shown = json.loads(runner.invoke(app, ["consent", "show", key, "--data-dir", str(d)]).output)
    assert shown["excluded_from_research"] is False
    assert [e["decision"] for e in shown["entries"]] == ["opt_out", "opt_in"]
