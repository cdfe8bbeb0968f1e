"""Issue 17: the steward commands against a running service (``--url``), as the key's own
principal, and on a stopped registry (``--data-dir``) audited as the OS user.

Owns: every steward command taking the ``--url`` options; review, constraints (with the page
hint), persons, keys export, link, model and report commands through the real app (the CLI's
client pointed at an in-process app); a 422 exits 2; local mode's ``os:<user>`` principal; and
one real ``mpi serve`` driven by a subprocess CLI.
"""

from __future__ import annotations

import csv
import getpass
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import click
import httpx
import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

import mpi.cli.remote as cli_remote
from mpi.agency.client import MpiClient
from mpi.cli.main import app
from mpi.config import Settings
from mpi.identity.registry import Registry
from tests.support.api import RECORDS, A, B, World, build_world, close_world
from tests.support.server import clean_env, mpi_cmd, serve

runner = CliRunner()
STEWARD_GROUPS = ("review", "persons", "labels", "constraints", "model", "keys", "report")


@pytest.fixture
def rw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """A world with records whose app every ``--url`` steward command talks to."""
    w = build_world(tmp_path)
    for agency in (A, B):
        assert w.post_records(agency, RECORDS[agency]).status_code == 200

    def connect(remote: cli_remote.Remote, *, max_retries: int = 2) -> MpiClient:
        key = remote.api_key_file.read_text().strip()
        c = MpiClient("https://testserver", api_key=key, max_retries=0)
        c._http.close()
        c._http = httpx.Client(transport=w.client._transport, base_url="https://testserver",
                               headers={"Authorization": f"Bearer {key}"})
        return c

    monkeypatch.setattr(cli_remote, "connect", connect)
    yield w
    close_world(w)


def _key(w: World, tmp_path: Path, who: str = "steward") -> Path:
    f = tmp_path / f"{who}.key"
    f.write_text(w.keys[who])
    return f


def _mpi(w: World, tmp_path: Path, *args: str, who: str = "steward", code: int = 0) -> Result:
    r = runner.invoke(app, [*args, "--url", "https://testserver", "--api-key-file",
                            str(_key(w, tmp_path, who))])
    assert r.exit_code == code, (r.output, r.exception)
    return r


def test_every_steward_command_takes_the_url_options() -> None:
    root = typer.main.get_command(app)
    assert isinstance(root, click.Group)
    names = []
    for group in STEWARD_GROUPS:
        sub = root.commands[group]
        assert isinstance(sub, click.Group)
        names += [(f"{group} {n}", c) for n, c in sub.commands.items()]
    names.append(("link", root.commands["link"]))
    for name, cmd in names:
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        assert {"--url", "--api-key-file", "--ca-file", "--client-cert", "--client-key",
                "--data-dir"} <= opts, name


@pytest.mark.integration
def test_steward_commands_work_against_a_running_app_as_the_keys_principal(
        rw: World, tmp_path: Path) -> None:
    page = json.loads(_mpi(rw, tmp_path, "review", "list", "--json").output)
    assert "items" in page
    reg = rw.registry
    one, two = [k for k in reg.persons if reg.person_count[reg.person_of[k]] == 1][:2]
    merged = _mpi(rw, tmp_path, "persons", "merge", one, "--with", two, "--reason", "same")
    assert "merged into" in merged.output
    listed = _mpi(rw, tmp_path, "constraints", "list", "--limit", "5", "--person-key", one)
    assert "1 constraints" in listed.output and "page stopped" not in listed.output
    full = _mpi(rw, tmp_path, "constraints", "list", "--limit", "1")
    assert "must_link" in full.output
    out = tmp_path / "keys.csv"
    _mpi(rw, tmp_path, "keys", "export", "--out", str(out))
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == reg.stats()["records"]["active"]
    shown = json.loads(_mpi(rw, tmp_path, "keys", "show", rows[0]["person_key"]).output)
    assert shown["status"] == "active"
    linked = _mpi(rw, tmp_path, "link")
    assert "mpi link (duckdb" in linked.output
    assert "version" in _mpi(rw, tmp_path, "model", "list").output
    bad = _mpi(rw, tmp_path, "report", "linkage-quality", "--by", "shoe_size", code=2)
    assert "no active record has the attribute" in bad.output
    principals = {e["principal"] for e in rw.audit()
                  if e["action"] in ("persons.merge", "keys.export", "persons.relink",
                                     "constraints.list", "review.list")}
    assert principals == {rw.ids["steward"]}
    refused = _mpi(rw, tmp_path, "constraints", "list", who=A, code=1)
    assert "403" in refused.output


def test_constraints_list_says_when_the_page_is_full(rw: World, tmp_path: Path) -> None:
    reg = rw.registry
    a, b, c = [k for k in reg.persons if reg.person_count[reg.person_of[k]] == 1][:3]
    _mpi(rw, tmp_path, "persons", "merge", a, "--with", b, "--with", c, "--reason", "same")
    first = _mpi(rw, tmp_path, "constraints", "list", "--limit", "1")
    assert "the page stopped at --limit 1: more with --after" in first.output
    after = first.output.rsplit("--after ", 1)[1].split()[0]
    second = _mpi(rw, tmp_path, "constraints", "list", "--limit", "5", "--after", after)
    assert "1 constraints" in second.output and "page stopped" not in second.output


@pytest.mark.integration
def test_local_mode_is_audited_as_the_os_user(tmp_path: Path) -> None:
    data = tmp_path / "data"
    reg = Registry(Settings(data_dir=data))
    try:
        for agency in (A, B):
            reg.enrol_records(agency, list(enumerate(RECORDS[agency], start=1)))
    finally:
        reg.close()
    for args in (["review", "list"], ["constraints", "list"]):
        r = runner.invoke(app, [*args, "--data-dir", str(data)])
        assert r.exit_code == 0, r.output
    bad = runner.invoke(app, ["report", "linkage-quality", "--by", "shoe_size", "--data-dir",
                              str(data)])
    assert bad.exit_code != 0
    reg = Registry(Settings(data_dir=data))
    try:
        events = [e for e in reg.list_audit(limit=10_000)
                  if e["action"] in ("review.list", "constraints.list", "reports.linkage_quality")]
    finally:
        reg.close()
    assert len(events) == 3
    assert {e["principal"] for e in events} == {f"os:{getpass.getuser()}"}
    assert [e["outcome"] for e in events if e["action"] == "reports.linkage_quality"] == ["invalid"]


@pytest.mark.integration  # a real mpi serve and subprocess CLIs
def test_steward_cli_against_a_real_server(tmp_path: Path) -> None:
    with serve(tmp_path / "data") as s:
        ca = s.data_dir / "tls" / "ca.pem"
        admin = tmp_path / "admin.key"
        admin.write_text(s.admin_key)

        def mpi(*args: str | Path, key: Path) -> subprocess.CompletedProcess[str]:
            return subprocess.run(mpi_cmd(*args, "--url", s.url, "--ca-file", ca,
                                          "--api-key-file", key),
                                  capture_output=True, text=True, timeout=120,
                                  env={**clean_env(), "COLUMNS": "200"})

        made = mpi("admin", "principal-add", "alice", "--role", "steward", "--human-email",
                   "alice@example.org", "--key-out", tmp_path / "alice.key", key=admin)
        assert made.returncode == 0, made.stderr
        alice = tmp_path / "alice.key"
        r = mpi("constraints", "list", key=alice)
        assert r.returncode == 0 and "0 constraints" in r.stdout, r.stderr
        r = mpi("link", key=alice)
        assert r.returncode == 0 and "mpi link (duckdb" in r.stdout, r.stderr
        r = mpi("report", "linkage-quality", "--by", "1-bad", key=alice)
        assert r.returncode == 2 and "by" in r.stderr and "Traceback" not in r.stderr, r.stderr
        r = mpi("review", "list", key=admin)
        assert r.returncode == 1 and "403" in r.stderr
