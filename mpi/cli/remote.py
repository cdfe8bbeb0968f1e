"""How a steward command reaches a registry: a running service (``--url``) or a stopped data
directory (``--data-dir``), Decision 85.

Owns: the ``remote_options`` decorator that gives a command ``--url``, ``--api-key-file``,
``--ca-file``, ``--client-cert`` and ``--client-key`` and hands it a ``Remote`` (or None for
local mode); ``connect`` (the one place a steward command builds its HTTPS client, so tests can
point it at an in-process app); ``call``, ``wait_job`` and ``download``; and
``local_principal``, the principal a command on a stopped registry is audited as
(``os:<user name>``). Must not: define commands, hold domain logic, or print a key.
"""

from __future__ import annotations

import functools
import getpass
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from mpi.cli.common import ClientCert, ClientKey, client_pair

if TYPE_CHECKING:
    from mpi.agency.client import MpiClient

err = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])

Url = Annotated[str | None, typer.Option(
    "--url", help="A running server, e.g. https://127.0.0.1:8443: act through its API as the "
    "principal of --api-key-file (default: a stopped registry, --data-dir).")]
KeyFile = Annotated[Path | None, typer.Option("--api-key-file", help="API key file (with --url).")]
CaFile = Annotated[Path | None, typer.Option("--ca-file", help="CA certificate to trust "
                                             "(with --url).")]
_OPTIONS: dict[str, tuple[Any, Any]] = {  # name -> (annotation, default)
    "url": (Url, None), "api_key_file": (KeyFile, None), "ca_file": (CaFile, None),
    "client_cert": (ClientCert, None), "client_key": (ClientKey, None)}
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Remote:
    """A running service to act on, and what to present to it."""

    url: str
    api_key_file: Path
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None


def local_principal() -> str:
    """The principal a command on a stopped registry is audited as: ``os:<user name>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for the uid (a bare container)
        import os
        user = f"uid{os.getuid()}"
    return f"os:{user}"


def remote_options(fn: F) -> F:
    """Give a command the ``--url`` options; it receives ``remote`` (a Remote, or None for a
    stopped registry) instead of them."""
    sig = inspect.signature(fn, eval_str=True)  # typer reads __signature__ as it is
    kept = [p for p in sig.parameters.values() if p.name != "remote"]
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                               annotation=ann) for name, (ann, default) in _OPTIONS.items()]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        opts = {name: kwargs.pop(name, None) for name in _OPTIONS}
        return fn(*args, remote=_remote(**opts), **kwargs)

    wrapper.__signature__ = sig.replace(parameters=kept + extra)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**fn.__annotations__, **{n: a for n, (a, _d) in _OPTIONS.items()}}
    return wrapper  # type: ignore[return-value]


def _remote(*, url: str | None, api_key_file: Path | None, ca_file: Path | None,
            client_cert: Path | None, client_key: Path | None) -> Remote | None:
    if not url:
        if api_key_file or ca_file or client_cert or client_key:
            raise typer.BadParameter("--api-key-file, --ca-file, --client-cert and --client-key "
                                     "go with --url")
        return None
    if api_key_file is None:
        raise typer.BadParameter("--url needs --api-key-file")
    client_pair(client_cert, client_key)
    return Remote(url, api_key_file, ca_file, client_cert, client_key)


def connect(remote: Remote, *, max_retries: int = 2) -> MpiClient:
    """The HTTPS client of a steward command (tests point this at an in-process app)."""
    from mpi.agency.client import MpiClient, read_api_key
    return MpiClient(remote.url, api_key=read_api_key(remote.api_key_file),
                     ca_file=remote.ca_file,
                     client_cert=client_pair(remote.client_cert, remote.client_key),
                     max_retries=max_retries)


def _refused(exc: Exception) -> typer.Exit:
    """A 422 is the caller's input: name each field and exit 2, as a local InvalidInput does."""
    from mpi.agency.client import ServiceError, failure_line
    if isinstance(exc, ServiceError) and exc.status == 422:
        err.print(f"[red]error:[/red] {escape(str(exc.problem.get('detail') or 'invalid input'))}")
        for p in (exc.problem.get("errors") or [])[:20]:
            where = " ".join(f"{k} {p[k]}" for k in ("row", "field") if p.get(k) is not None)
            err.print(f"  {escape(where)}: {escape(str(p.get('reason')))}")
        return typer.Exit(2)
    err.print(f"[red]error:[/red] {escape(failure_line(exc) or str(exc))}")
    return typer.Exit(1)


def call(remote: Remote, method: str, path: str, *, json: Any = None,
         params: dict[str, Any] | None = None) -> Any:
    """One API call; a refusal is printed as one line (a 422 with its fields, exit 2)."""
    from mpi.agency.client import ServiceError
    kwargs: dict[str, Any] = {}
    if json is not None:
        kwargs["json"] = json
    if params:
        kwargs["params"] = {k: v for k, v in params.items() if v is not None}
    try:
        with connect(remote) as client:
            return client.request(method, path, **kwargs)
    except ServiceError as exc:
        raise _refused(exc) from None


def download(remote: Remote, path: str, out_file: Path) -> int:
    """GET a file into ``out_file``; bytes written."""
    from mpi.agency.client import ServiceError
    try:
        with connect(remote) as client:
            return client.download(path, out_file)
    except ServiceError as exc:
        raise _refused(exc) from None


def wait_job(remote: Remote, job: dict[str, Any], *,
             say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Poll ``GET /v1/jobs/{job_id}`` until the job ends; its final state (exit 1 unless it
    completed). ``say`` gets each new progress message."""
    seen = job.get("message")
    if say is not None and seen:
        say(seen)
    while job["state"] in ("queued", "running"):
        time.sleep(POLL_SECONDS)
        job = call(remote, "GET", f"/v1/jobs/{job['job_id']}")
        if say is not None and job.get("message") and job["message"] != seen:
            seen = job["message"]
            say(seen)
    if job["state"] != "completed":
        reasons = "; ".join(str(e.get("reason")) for e in job.get("errors") or [])
        err.print(f"[red]error:[/red] job {job['job_id']} {job['state']}"
                  + (f": {escape(reasons)}" if reasons else ""))
        raise typer.Exit(1)
    return job


def namespace(value: Any) -> Any:
    """A JSON result as nested attribute objects (to print it as the local result is)."""
    if isinstance(value, dict):
        return SimpleNamespace(**{k: namespace(v) for k, v in value.items()})
    if isinstance(value, list):
        return [namespace(v) for v in value]
    return value
