"""Run the real ``mpi serve`` as a subprocess on loopback (TLS, mTLS or plain HTTP).

Used by the integration tests that need a real uvicorn server (tests/api/test_https.py,
tests/identity/test_reliability.py). Every server is started with a fresh ``--data-dir`` and a
free port, waits for ``GET /healthz`` (bounded), and is always terminated (SIGTERM, then SIGKILL)
when its context exits.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from api.demo import free_port

SERVE = [sys.executable, "-c", "from api.cli import main; main()"]
READY_TIMEOUT = 30.0


def mpi_cmd(*args: str | Path) -> list[str]:
    """The ``mpi`` command line (same interpreter, so the editable install is used)."""
    return [*SERVE, *(str(a) for a in args)]


def clean_env() -> dict[str, str]:
    """The environment without MPI_* settings that could point a server elsewhere."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MPI_")}


def ssl_context(ca: Path | None = None, *, client_cert: tuple[Path, Path] | None = None,
                max_tls12: bool = False) -> ssl.SSLContext:
    """A verifying client context trusting ``ca`` (or the system store when None)."""
    ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    if client_cert is not None:
        ctx.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
    if max_tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


@dataclass
class Served:
    """A running ``mpi serve`` process."""

    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    scheme: str
    log_dir: Path

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def admin_key(self) -> str:
        return (self.data_dir / "admin.key").read_text().strip()

    def stdout(self) -> str:
        return (self.log_dir / "stdout.txt").read_text(errors="replace")

    def stderr(self) -> str:
        return (self.log_dir / "stderr.txt").read_text(errors="replace")

    def output(self) -> str:
        """stdout + stderr with every whitespace run removed (rich wraps long lines)."""
        return "".join((self.stdout() + self.stderr()).split())

    def kill(self) -> None:
        """SIGKILL, no shutdown of any kind."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Graceful stop (SIGTERM, uvicorn shuts the app down), SIGKILL after 20 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def _wait_ready(s: Served, verify: ssl.SSLContext | bool) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    with httpx.Client(verify=verify, timeout=2.0) as c:
        while True:
            if s.proc.poll() is not None:
                raise RuntimeError(f"mpi serve exited with {s.proc.returncode}:\n{s.stdout()}\n{s.stderr()}")
            try:
                if c.get(f"{s.url}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mpi serve not ready in {READY_TIMEOUT}s:\n{s.stdout()}\n{s.stderr()}")
            time.sleep(0.1)


@contextmanager
def serve(data_dir: Path, *args: str | Path, log_dir: Path | None = None, insecure: bool = False,
          verify: ssl.SSLContext | None = None) -> Iterator[Served]:
    """Run ``mpi serve --data-dir DATA_DIR ARGS`` on a free port until the block ends.

    Readiness is polled over HTTPS trusting ``verify`` (default: the self-signed CA that the
    server writes to ``<data_dir>/tls/ca.pem``), or over plain HTTP with ``insecure``.
    """
    log_dir = log_dir or data_dir.with_name(data_dir.name + "-log")
    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = mpi_cmd("serve", "--data-dir", data_dir, "--port", str(port), *args)
    if insecure:
        argv.append("--insecure-http")
    with (log_dir / "stdout.txt").open("wb") as out, (log_dir / "stderr.txt").open("wb") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=clean_env())
    s = Served(proc, port, data_dir, "http" if insecure else "https", log_dir)
    try:
        if insecure:
            _wait_ready(s, False)
        elif verify is not None:
            _wait_ready(s, verify)
        else:
            tls = data_dir / "tls"
            deadline = time.monotonic() + READY_TIMEOUT
            # mpi.tls writes ca.key last: once it exists, ca.pem is complete
            while not (tls / "ca.key").exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            _wait_ready(s, ssl_context(tls / "ca.pem") if (tls / "ca.key").exists() else False)
        yield s
    finally:
        s.stop()
