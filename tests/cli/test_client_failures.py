"""Issue 15, the ``mpi`` client side: every ``--url`` command takes ``--client-cert`` and
``--client-key``; a TLS failure, a refused connection, a 403 or a 413 is one line on stderr and a
non-zero exit, never a traceback; ``submit`` splits a batch the server finds too large.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
import typer

from api.cli import app
from api.demo import free_port
from mpi.agency.client import MpiClient
from tests.support.server import Served, clean_env, mpi_cmd, serve


def _commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", cmd


def test_every_url_command_takes_a_client_certificate() -> None:
    root = typer.main.get_command(app)
    assert isinstance(root, click.Group)
    with_url = []
    for name, cmd in _commands(root):
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        if "--url" in opts:
            with_url.append(name)
            assert {"--client-cert", "--client-key"} <= opts, name
    assert len(with_url) >= 10 and "submit" in with_url and "admin agencies" in with_url


def _one_line_failure(r: subprocess.CompletedProcess[str], *words: str) -> None:
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr + r.stdout
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w.lower() in lines[0].lower(), lines[0]


def _mpi(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(mpi_cmd(*args), capture_output=True, text=True, timeout=120,
                          env={**clean_env(), "COLUMNS": "200"})


def _key(tmp_path: Path, value: str) -> Path:
    f = tmp_path / "key"
    f.write_text(value)
    return f


@pytest.mark.integration  # a subprocess CLI
def test_connection_refused_is_one_line(tmp_path: Path) -> None:
    r = _mpi("admin", "agencies", "--url", f"https://127.0.0.1:{free_port()}",
             "--api-key-file", _key(tmp_path, "mpi_x"))
    _one_line_failure(r, "connect")


@pytest.mark.integration  # a subprocess CLI
def test_missing_client_certificate_file_is_one_line(tmp_path: Path) -> None:
    r = _mpi("admin", "agencies", "--url", f"https://127.0.0.1:{free_port()}",
             "--api-key-file", _key(tmp_path, "mpi_x"),
             "--client-cert", tmp_path / "nope.pem", "--client-key", tmp_path / "nope.key")
    _one_line_failure(r, "certificate")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(tmp_path_factory.mktemp("client") / "data") as s:
        yield s


@pytest.mark.integration
def test_tls_verification_failure_is_one_line(server: Served, tmp_path: Path) -> None:
    r = _mpi("admin", "agencies", "--url", server.url, "--api-key-file", _key(tmp_path, server.admin_key))
    _one_line_failure(r, "certificate")


@pytest.mark.integration
def test_forbidden_is_one_line(server: Served, tmp_path: Path) -> None:
    ca = server.data_dir / "tls" / "ca.pem"
    r = _mpi("extract", "disclosures", "p1", "--url", server.url, "--ca-file", ca,
             "--api-key-file", _key(tmp_path, server.admin_key))
    _one_line_failure(r, "403")
    r = _mpi("admin", "agencies", "--url", server.url, "--ca-file", ca,
             "--api-key-file", _key(tmp_path, "mpi_" + "0" * 43))
    _one_line_failure(r, "401")


def _records(n: int) -> list[dict[str, Any]]:
    return [{"source_record_id": f"r{i}", "schema_version": 1} for i in range(n)]


def test_submit_splits_a_batch_on_413(tmp_path: Path) -> None:
    sizes: list[int] = []
    keys: set[str] = set()

    def handler(request: httpx.Request) -> httpx.Response:
        records = json.loads(request.content)["records"]
        sizes.append(len(records))
        if len(records) > 3:
            return httpx.Response(413, json={"title": "Payload Too Large", "status": 413,
                                             "detail": "The request body exceeds 10 bytes."})
        keys.add(request.headers["idempotency-key"])
        return httpx.Response(200, json={"results": [{"outcome": "new_person"} for _ in records]})

    tokens = tmp_path / "t.jsonl"
    tokens.write_text("".join(json.dumps(r) + "\n" for r in _records(10)))
    with MpiClient("https://mpi.test", api_key="k", transport=httpx.MockTransport(handler),
                   max_retries=0) as c:
        summary = c.submit_file(tokens, batch_size=10)
    assert summary.records == 10 and summary.outcomes == {"new_person": 10}
    assert sizes[0] == 10 and sum(s for s in sizes if s <= 3) == 10
    assert len(keys) == len([s for s in sizes if s <= 3])  # every piece its own idempotency key


def test_a_single_record_over_the_limit_is_one_line(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(413, json={"title": "Payload Too Large", "status": 413,
                                         "detail": "The request body exceeds 10 bytes."})

    tokens = tmp_path / "t.jsonl"
    tokens.write_text(json.dumps(_records(1)[0]) + "\n")
    from mpi.agency.client import ServiceError
    with MpiClient("https://mpi.test", api_key="k", transport=httpx.MockTransport(handler),
                   max_retries=0) as c, pytest.raises(ServiceError) as exc:
        c.submit_file(tokens, batch_size=10)
    assert exc.value.status == 413
