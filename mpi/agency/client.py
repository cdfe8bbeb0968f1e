"""Agency-side HTTPS client: submit token files in batches, with retries and resume.

Owns: talking to a running mpi service over HTTPS (httpx), retrying 429/5xx with backoff, and
the resume state file that makes ``submit`` safe to re-run (each batch carries an idempotency
key derived from the file and batch number, so a resent batch is never stored twice), splitting
a batch the service refuses as too large (413), and ``failure_line``: one line for each kind of
client failure. Must not:
log tokens or the API key.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from mpi.agency.tokenfile import iter_chunks
from mpi.errors import ConfigurationError, InvalidInput

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class ServiceError(Exception):
    """The service refused a request; ``problem`` is its RFC 9457 body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}")
        self.status = status
        self.problem = problem


def read_api_key(path: Path) -> str:
    """Read an API key file (first line)."""
    try:
        key = path.read_text().strip().splitlines()[0].strip()
    except (FileNotFoundError, IndexError):
        raise ConfigurationError(f"API key file {path} is missing or empty") from None
    return key


@dataclass
class SubmitSummary:
    """What a submit run did."""

    batches: int = 0
    skipped_batches: int = 0
    records: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    rejected: list[dict[str, Any]] = field(default_factory=list)


class MpiClient:
    """A small client for the mpi HTTPS API."""

    def __init__(self, base_url: str, *, api_key: str, ca_file: Path | None = None,
                 client_cert: tuple[Path, Path] | None = None, timeout: float = 120.0,
                 max_retries: int = 8, backoff: float = 0.5,
                 transport: httpx.BaseTransport | None = None) -> None:
        try:
            context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            if client_cert is not None:
                context.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"cannot load the CA file or client certificate/key: "
                                     f"{_reason(exc)}") from None
        self._http = httpx.Client(base_url=base_url.rstrip("/"), verify=context,
                                  timeout=timeout, transport=transport,
                                  headers={"Authorization": f"Bearer {api_key}"})
        self.max_retries = max_retries
        self.backoff = backoff

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> MpiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request, retrying 429/5xx and connection errors with backoff; JSON result."""
        for attempt in range(self.max_retries + 1):
            try:
                resp = self._http.request(method, path, **kwargs)
            except httpx.TransportError:
                if attempt == self.max_retries:
                    raise
                time.sleep(self.backoff * 2 ** attempt)
                continue
            if resp.status_code in RETRY_STATUSES and attempt < self.max_retries:
                retry_after = resp.headers.get("Retry-After")
                delay = float(retry_after) if retry_after else self.backoff * 2 ** attempt
                time.sleep(min(delay, 30.0))
                continue
            if resp.status_code >= 400:
                try:
                    problem = resp.json()
                except ValueError:
                    problem = {"title": resp.reason_phrase}
                raise ServiceError(resp.status_code, problem)
            return resp.json() if resp.content else None
        raise AssertionError("unreachable")

    def download(self, path: str, out_file: Path) -> int:
        """GET a binary resource (e.g. an extract package) into ``out_file``; bytes written."""
        with self._http.stream("GET", path) as resp:
            if resp.status_code >= 400:
                resp.read()
                try:
                    problem = resp.json()
                except ValueError:
                    problem = {"title": resp.reason_phrase}
                raise ServiceError(resp.status_code, problem)
            tmp = out_file.with_name(out_file.name + ".part")
            size = 0
            with tmp.open("wb") as fh:
                for chunk in resp.iter_bytes():
                    fh.write(chunk)
                    size += len(chunk)
            tmp.replace(out_file)
        return size

    def post_records(self, records: list[dict[str, Any]], *,
                     idempotency_key: str | None = None) -> dict[str, Any]:
        """POST /v1/records."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        result: dict[str, Any] = self.request("POST", "/v1/records", json={"records": records},
                                              headers=headers)
        return result

    def match(self, record: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/match."""
        result: dict[str, Any] = self.request("POST", "/v1/match", json=record)
        return result

    def submit_file(self, path: Path, *, batch_size: int = 1000, state_file: Path | None = None,
                    progress: Callable[[int], None] | None = None,
                    on_results: Callable[[list[dict[str, Any]]], None] | None = None
                    ) -> SubmitSummary:
        """Post a token file in batches; resumable through ``state_file``."""
        fingerprint = _file_fingerprint(path)
        state_file = state_file or path.with_name(path.name + ".submit-state.json")
        done = _read_state(state_file, fingerprint)
        summary = SubmitSummary()
        for number, batch in enumerate(_batches(path, batch_size)):
            if number < done:
                summary.skipped_batches += 1
                if progress:
                    progress(len(batch))
                continue
            key = hashlib.sha256(f"{fingerprint}/{batch_size}/{number}".encode()).hexdigest()
            self._post_batch(batch, key, summary, on_results)
            summary.batches += 1
            summary.records += len(batch)
            _write_state(state_file, fingerprint, number + 1)
            if progress:
                progress(len(batch))
        return summary


    def _post_batch(self, batch: list[dict[str, Any]], key: str, summary: SubmitSummary,
                    on_results: Callable[[list[dict[str, Any]]], None] | None) -> None:
        """Post one batch; a 413 splits it in halves (each with its own idempotency key derived
        from the batch's), down to a single record, whose 413 is raised."""
        try:
            body = self.post_records(batch, idempotency_key=key)
        except ServiceError as exc:
            if exc.status == 413 and len(batch) > 1:
                half = len(batch) // 2
                for part, piece in (("a", batch[:half]), ("b", batch[half:])):
                    sub = hashlib.sha256(f"{key}/{part}".encode()).hexdigest()
                    self._post_batch(piece, sub, summary, on_results)
                return
            if exc.status != 422:
                raise
            summary.rejected.extend(exc.problem.get("errors", []))
            return
        for r in body["results"]:
            summary.outcomes[r["outcome"]] = summary.outcomes.get(r["outcome"], 0) + 1
        if on_results is not None:
            on_results(body["results"])


def failure_line(exc: BaseException) -> str | None:
    """One line for a client failure (refusal, TLS, connection), or None if it is not one."""
    if isinstance(exc, ServiceError):
        title = exc.problem.get("title") or ""
        detail = exc.problem.get("detail") or ""
        return f"the service refused the request: {exc.status} {title}: {detail}".rstrip(": ")
    if isinstance(exc, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return (f"TLS certificate verification failed ({_reason(exc)}); pass the server's CA "
                "with --ca-file")
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect to the service: {_reason(exc)}"
    if isinstance(exc, httpx.TimeoutException):
        return "the service did not answer in time"
    if isinstance(exc, httpx.TransportError | ssl.SSLError):
        return (f"the connection to the service failed ({type(exc).__name__}: {_reason(exc)}); "
                "a server requiring mutual TLS needs --client-cert and --client-key")
    return None


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _batches(path: Path, size: int) -> Iterator[list[dict[str, Any]]]:
    for rows, problems in iter_chunks(path, chunk=size):
        if problems:
            raise InvalidInput(f"{path.name}: unreadable rows", problems=problems)
        yield [obj for _row, obj in rows]


def _file_fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_state(path: Path, fingerprint: str) -> int:
    try:
        state = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return 0
    return int(state.get("batches_done", 0)) if state.get("fingerprint") == fingerprint else 0


def _write_state(path: Path, fingerprint: str, batches_done: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"fingerprint": fingerprint, "batches_done": batches_done}))
    tmp.replace(path)
