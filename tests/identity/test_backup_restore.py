"""Backup while serving, and restore (Decision 70).

- A backup taken through ``POST /v1/admin/backup`` while another thread enrols records through
  the app restores to a registry whose counts equal the manifest's and whose audit chain
  verifies; every record acknowledged before the backup was asked for is in it.
- A restore into a non-empty directory is refused (unless ``--force``).
- A backup with one byte flipped is refused by its SHA-256s, and nothing is restored.
- ``mpi backup`` / ``mpi restore`` on a stopped data directory.
"""

from __future__ import annotations

import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mpi.backup import backup_stopped, restore
from mpi.cli.main import app
from mpi.config import Settings
from mpi.errors import InvalidInput
from mpi.identity.registry import Registry
from tests.support.api import A, build_world, close_world
from tests.support.records import token_records


@pytest.fixture(scope="module")
def people() -> list[dict[str, Any]]:
    return token_records(people=400, agencies=1, seed=21)[A]


def _modes(root: Path) -> set[tuple[str, int]]:
    return {("d" if p.is_dir() else "f", p.stat().st_mode & 0o777) for p in [root, *root.rglob("*")]}


def test_backup_while_enrolling_restores_counts_and_chain(tmp_path: Path,
                                                         people: list[dict[str, Any]]) -> None:
    w = build_world(tmp_path)
    acked: list[str] = []
    stop = threading.Event()
    failures: list[str] = []

    def enrol() -> None:
        for rec in people:
            if stop.is_set():
                return
            r = w.post_records(A, [rec])
            if r.status_code != 200:
                failures.append(r.text)
                return
            acked.append(rec["source_record_id"])

    worker = threading.Thread(target=enrol, daemon=True)
    try:
        worker.start()
        while len(acked) < 40 and worker.is_alive():
            threading.Event().wait(0.01)
        before = set(acked)
        r = w.client.post("/v1/admin/backup", headers=w.h("admin"))
        after = len(acked)
        assert r.status_code == 201, r.text
        body = r.json()
        stop.set()
        worker.join(timeout=60)
        assert not failures, failures[:1]
        assert len(before) <= body["records"]["active"] <= after
        assert len(before) < len(people)  # the enrols went on around the backup
        r = w.client.post("/v1/admin/backup", headers=w.h(A))
        assert r.status_code == 403
        archive = w.data_dir / body["file"]
        assert archive.stat().st_mode & 0o777 == 0o600
        assert [e for e in w.audit() if e["action"] == "backup.create"]
    finally:
        stop.set()
        close_world(w)

    target = tmp_path / "restored"
    done = restore(archive, Settings(data_dir=target))
    assert done.records == body["records"] and done.persons == body["persons"]
    assert done.audit_events == body["audit_events"]
    assert _modes(target) <= {("d", 0o700), ("f", 0o600)}
    assert not list(target.rglob(".mpi-restore-*")) and not (target / "backups").exists()
    reg = Registry(Settings(data_dir=target))
    try:
        restored = set(reg.export_keys().column("source_record_id").to_pylist())
        assert before <= restored
        assert reg.verify_audit().ok
        assert reg.stats()["records"] == body["records"]
    finally:
        reg.close()


@pytest.fixture
def stopped_backup(tmp_path: Path, people: list[dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
    w = build_world(tmp_path)
    try:
        assert w.post_records(A, people[:50]).status_code == 200
        for rec in people[50:60]:  # single records go through the journal
            assert w.post_records(A, [rec]).status_code == 200
    finally:
        close_world(w)
    out = tmp_path / "b" / "backup.tar"
    manifest = backup_stopped(Settings(data_dir=w.data_dir), out)
    assert manifest["counts"]["records"] == {"active": 60}
    assert {"mpi.duckdb", "server.secret", "admin.key"} <= set(manifest["files"])
    return out, manifest


def test_restore_refuses_a_non_empty_directory(tmp_path: Path,
                                               stopped_backup: tuple[Path, dict[str, Any]]) -> None:
    archive, manifest = stopped_backup
    target = tmp_path / "busy"
    target.mkdir()
    (target / "something").write_text("x")
    with pytest.raises(InvalidInput, match="not empty"):
        restore(archive, Settings(data_dir=target))
    assert not (target / "mpi.duckdb").exists()
    done = restore(archive, Settings(data_dir=target), force=True)
    assert done.records == manifest["counts"]["records"]
    assert (target / "something").exists()


def test_a_flipped_byte_is_refused(tmp_path: Path,
                                   stopped_backup: tuple[Path, dict[str, Any]]) -> None:
    archive, _manifest = stopped_backup
    with tarfile.open(archive) as tar:  # flip a byte in the middle of the registry file
        info = tar.getmember("files/mpi.duckdb")
        where = info.offset_data + info.size // 2
    data = bytearray(archive.read_bytes())
    data[where] ^= 0x40
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(data))
    target = tmp_path / "t"
    with pytest.raises(InvalidInput, match="mpi.duckdb fails its SHA-256"):
        restore(bad, Settings(data_dir=target))
    assert not (target / "mpi.duckdb").exists()
    for offset in (100, len(data) // 2, 1024 + 7):  # anywhere else: refused too
        flipped = bytearray(archive.read_bytes())
        flipped[offset] ^= 0x01
        bad.write_bytes(bytes(flipped))
        with pytest.raises(InvalidInput, match="refused"):
            restore(bad, Settings(data_dir=tmp_path / f"t{offset}"))


def test_cli_backup_and_restore(tmp_path: Path, people: list[dict[str, Any]]) -> None:
    w = build_world(tmp_path)
    try:
        assert w.post_records(A, people[:20]).status_code == 200
    finally:
        close_world(w)
    runner = CliRunner()
    out = tmp_path / "cli.tar"
    r = runner.invoke(app, ["backup", "--data-dir", str(w.data_dir), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "records {'active': 20}" in " ".join(r.output.split())
    target = tmp_path / "cli-restored"
    r = runner.invoke(app, ["restore", "--from", str(out), "--data-dir", str(target)])
    assert r.exit_code == 0, r.output
    assert "audit chain OK" in r.output
    r = runner.invoke(app, ["restore", "--from", str(out), "--data-dir", str(target)])
    assert r.exit_code != 0 and isinstance(r.exception, InvalidInput)
