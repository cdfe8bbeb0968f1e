"""Files at rest: what the service writes is private, and raw uploads do not outlive their job.

Owns: the data directory and every directory under it 0700 and every file 0600 whatever the
process umask (registry, its WAL even when DuckDB recreates it after a checkpoint, journal
segments, secrets, admin key, uploads, model versions, extract packages and their secrets and
signing key, TLS material); a clean close checkpoints (nothing left only in
``mpi.duckdb.wal``); a bulk upload is deleted when its job ends in any state (completed,
failed, interrupted) and a crashed job's upload is deleted at the next start.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mpi.config import Settings
from mpi.extract import delivery
from mpi.extract.package import write_package
from mpi.extract.signing import load_or_create_signing_key
from mpi.identity.registry import Registry
from mpi.linkage.catalog import candidates_dir
from mpi.linkage.modelfile import save_version
from mpi.store import jobs as jstore
from mpi.tls import ensure_self_signed
from tests.support.api import RECORDS, A, World, build_world, close_world
from tests.support.records import token_records

BIG = token_records(people=120, agencies=2, seed=11)  # > JOURNAL_MAX_RECORDS for one agency


@pytest.fixture(autouse=True)
def loose_umask() -> Iterator[None]:
    """The usual 022 umask: files would be 0644 and directories 0755 unless made private."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def not_private(root: Path) -> list[str]:
    """Every directory (``root`` included) not 0700 and every regular file not 0600."""
    out = []
    for p in [root, *sorted(root.rglob("*"))]:
        st = p.lstat()
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode) and mode != 0o700 or stat.S_ISREG(st.st_mode) and mode != 0o600:
            out.append(f"{p.relative_to(root.parent)} {oct(mode)}")
    return out


def rows(records: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    return list(enumerate(records, 1))


def test_registry_files_are_private_and_a_clean_close_checkpoints(tmp_path: Path) -> None:
    data = tmp_path / "data"
    reg = Registry(Settings(data_dir=data))
    try:
        small = reg.enrol_records(A, rows(RECORDS[A][:3]))  # journaled
        big = reg.enrol_records(A, rows(BIG[A]))  # written to DuckDB directly
        assert not small.problems and not big.problems
        reg.store.checkpoint()  # DuckDB deletes the WAL; the next write creates a new one
        reg.enrol_records("agency_b", rows(BIG["agency_b"]))
        reg.enrol_records(A, rows(RECORDS[A][3:5]))
        reg.stats()  # folds the journal
        assert (data / "mpi.duckdb.wal").exists()
        assert not_private(data) == []
        save_version(candidates_dir(reg.settings), name="atrest", model={"m": 1}, meta={})
        key = load_or_create_signing_key(delivery.signing_key_path(data))
        delivery.load_or_create_project_secret(data, "x_" + "0" * 16)
        package = delivery.package_path(data, "x_" + "0" * 16, 1)
        package.parent.mkdir(mode=0o700)  # as the workflow does
        write_package(package, {"rows.csv": b"a\n1\n"}, signing_key=key)
        ensure_self_signed(data / "tls")
        active = reg.stats()["records"]["active"]
    finally:
        reg.close()
    assert not_private(data) == []
    wal = data / "mpi.duckdb.wal"
    assert not wal.exists() or wal.stat().st_size == 0, "clean close left data only in the WAL"
    (tmp_path / "backup").mkdir()  # a backup that copies only mpi.duckdb holds everything
    shutil.copy(data / "mpi.duckdb", tmp_path / "backup" / "mpi.duckdb")
    again = Registry(Settings(data_dir=tmp_path / "backup"))
    try:
        assert again.stats()["records"]["active"] == active > len(BIG[A]) + len(BIG["agency_b"])
    finally:
        again.close()


def test_an_existing_loose_data_dir_and_registry_are_made_private_on_open(tmp_path: Path) -> None:
    data = tmp_path / "data"
    Registry(Settings(data_dir=data)).close()
    data.chmod(0o755)
    (data / "mpi.duckdb").chmod(0o644)
    reg = Registry(Settings(data_dir=data))
    try:
        assert not_private(data) == []
    finally:
        reg.close()


def wait_job(w: World, job_id: str) -> dict[str, Any]:
    for _ in range(400):
        job = w.client.get(f"/v1/jobs/{job_id}", headers=w.h(A)).json()
        if job["state"] not in ("queued", "running"):
            return dict(job)
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def upload(w: World, records: list[dict[str, Any]]) -> str:
    body = "\n".join(json.dumps(r) for r in records).encode()
    r = w.client.post("/v1/bulk", files={"file": ("t.jsonl", body)}, headers=w.h(A))
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


@pytest.fixture
def app_world(tmp_path: Path) -> Iterator[World]:
    """The real app built under the loose umask, enrolling bulk files one record per chunk."""
    w = build_world(tmp_path, bulk_chunk=1)
    yield w
    close_world(w)


def test_an_upload_is_private_while_its_job_runs_and_gone_when_it_completes(
        app_world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    w = app_world
    seen: list[list[str]] = []
    enrol = w.registry.enrol_records

    def spying(*a: Any, **kw: Any) -> Any:
        seen.append(not_private(w.data_dir / "uploads") + [p.name for p in
                                                           (w.data_dir / "uploads").iterdir()])
        return enrol(*a, **kw)

    monkeypatch.setattr(w.registry, "enrol_records", spying)
    job = wait_job(w, upload(w, RECORDS[A][:3]))
    assert job["state"] == "completed" and job["done"] == 3
    assert seen and seen[0] == [f"{job['job_id']}.jsonl"], "the upload was not 0600 in a 0700 dir"
    assert list((w.data_dir / "uploads").iterdir()) == []
    assert not_private(w.data_dir) == []


def test_an_upload_is_gone_when_its_job_fails(app_world: World,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    w = app_world

    def broken(*_a: Any, **_kw: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(w.registry, "enrol_records", broken)
    assert wait_job(w, upload(w, RECORDS[A][:3]))["state"] == "failed"
    assert list((w.data_dir / "uploads").iterdir()) == []


def test_an_upload_is_gone_when_its_job_is_interrupted(app_world: World,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    w = app_world
    enrol = w.registry.enrol_records

    def then_stop(*a: Any, **kw: Any) -> Any:
        w.registry.background.stopping.set()  # a shutdown between the first and second chunk
        return enrol(*a, **kw)

    monkeypatch.setattr(w.registry, "enrol_records", then_stop)
    job_id = upload(w, RECORDS[A][:3])
    w.registry.background.wait(30)
    w.registry.background.stopping.clear()
    assert wait_job(w, job_id)["state"] == "interrupted"
    assert list((w.data_dir / "uploads").iterdir()) == []


def test_a_crashed_jobs_upload_is_deleted_at_start(tmp_path: Path) -> None:
    """A process killed mid-job leaves its job running and its raw upload behind: the next
    start marks the job interrupted and deletes the upload."""
    data = tmp_path / "data"
    reg = Registry(Settings(data_dir=data))
    with reg.store.transaction() as cur:
        jstore.insert_job(cur, job_id="job_x", principal_id="p_1", agency=A, kind="bulk_enrol",
                          total=1, now=reg.clock())
    reg.close()
    (data / "uploads").mkdir()
    left = data / "uploads" / "job_x.jsonl"
    left.write_text(json.dumps(RECORDS[A][0]) + "\n")
    w = build_world(tmp_path)
    try:
        assert not left.exists(), "a crashed job's raw upload outlived the restart"
        assert jstore.find_job(w.registry.store.cursor(), "job_x")["state"] == "interrupted"
        assert not_private(data) == []
    finally:
        close_world(w)
