"""The long steward actions on a running registry as background jobs: re-link and keys export.

Owns: starting a ``relink`` job (the whole registry re-linked with the active model, computed
without the write lock and committed under it: ``relink.link_registry(live=True)``,
Decision 84) and a ``keys_export`` job (every active record's person key written to a private
CSV under ``DATA_DIR/exports``), their progress, outcome and result in the ``job`` table where
``GET /v1/jobs/{job_id}`` reads them, and which principal may download an export's file. One
re-link at a time. Must not: run SQL (mpi/store/jobs.py), know about HTTP, or put a person key
in a job's message or an audit event.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.csv as pacsv

from mpi.audit import AuditEntry
from mpi.errors import InvalidInput, NotFound, Problem
from mpi.files import open_private, private_dir
from mpi.identity import relink
from mpi.steward.modeljobs import failure_reason, write_job_state
from mpi.store import jobs as jstore

if TYPE_CHECKING:
    from mpi.identity.registry import Registry

RELINK_STEPS = 5  # export, Splink predict + cluster, constraints, reconcile, commit
EXPORT_RETENTION_S = 86_400.0
"""An export file is deleted when a later export starts and it is older than this."""


def exports_dir(registry: Registry) -> Path:
    """Where keys exports are written (0700; each file 0600)."""
    return registry.settings.data_dir / "exports"


class RegistryJobs:
    """Re-link and keys-export jobs of one registry (their state lives in its background runner)."""

    def __init__(self, registry: Registry) -> None:
        self._reg = registry
        self._background = registry.background

    # ---- re-link ----------------------------------------------------------------------
    def submit_relink(self, principal_id: str, *, engine: str = "duckdb") -> str:
        """Start a re-link with the active model; the job id (409 while another one runs)."""
        if engine not in relink.ENGINES:
            raise InvalidInput("unknown engine", problems=[
                Problem(None, "engine", f"one of {', '.join(relink.ENGINES)}")])
        job_id = "job_" + secrets.token_hex(8)
        self._background.reserve(job_id, group="relink", exclusive=True,
                                 busy="a re-link is already running; wait for it to finish")
        try:
            self._insert(job_id, principal_id, kind="relink", total=RELINK_STEPS, audit=AuditEntry(
                principal_id, "persons.relink_requested", "registry",
                detail={"job_id": job_id, "engine": engine}))
            self._background.start(job_id, self._run_relink, job_id, principal_id, engine)
        except BaseException:
            self._background.release(job_id)
            raise
        return job_id

    def _run_relink(self, job_id: str, principal_id: str, engine: str) -> None:
        done, state, message = 0, "running", "exporting records"
        result: dict[str, Any] | None = None
        errors: list[dict[str, Any]] = []
        commit_started: list[float] = []

        def progress(msg: str) -> None:
            nonlocal done, message
            if msg.startswith(relink.COMMIT_MESSAGE) and not commit_started:
                commit_started.append(time.perf_counter())
            done, message = min(done + 1, RELINK_STEPS - 1), msg
            write_job_state(self._reg, job_id, state="running", done=done, message=msg)

        started = time.perf_counter()
        try:
            write_job_state(self._reg, job_id, state=state, done=0, message=message)
            s = relink.link_registry(
                self._reg, engine="spark" if engine == "spark" else "duckdb", live=True,
                progress=progress, audit=[AuditEntry(principal_id, "persons.relink", "registry",
                                                     detail={"engine": engine, "job_id": job_id})])
            end = time.perf_counter()
            result = {"records": s.records, "persons": s.persons, "merges": s.merges,
                      "splits": s.splits, "keys_changed": s.keys_changed,
                      "new_keys": s.new_keys, "model_version": s.model_version,
                      "seconds": round(end - started, 3),
                      "write_lock_seconds": round(end - commit_started[0], 3)
                      if commit_started else None}
            state, done = "completed", RELINK_STEPS
            message = (f"re-linked {s.records} records: {s.keys_changed} changed key, "
                       f"{s.merges} merges, {s.splits} splits, {s.new_keys} new keys")
        except Exception as exc:  # the job must end in a state
            state = "failed"
            errors.append(failure_reason(exc, "re-link"))
        finally:
            with contextlib.suppress(Exception):
                write_job_state(self._reg, job_id, state=state, done=done, message=message,
                                result=result, errors=errors)

    # ---- keys export ------------------------------------------------------------------
    def submit_keys_export(self, principal_id: str) -> str:
        """Start writing every active record's person key to a private CSV; the job id."""
        job_id = "job_" + secrets.token_hex(8)
        self._background.reserve(job_id, group="export")
        try:
            self._insert(job_id, principal_id, kind="keys_export", total=1, audit=AuditEntry(
                principal_id, "keys.export", "registry", detail={"job_id": job_id}))
            self._background.start(job_id, self._run_export, job_id)
        except BaseException:
            self._background.release(job_id)
            raise
        return job_id

    def _run_export(self, job_id: str) -> None:
        state, message = "running", "exporting keys"
        result: dict[str, Any] | None = None
        errors: list[dict[str, Any]] = []
        folder = private_dir(exports_dir(self._reg))
        path = folder / f"{job_id}.csv"
        try:
            write_job_state(self._reg, job_id, state=state, done=0, message=message)
            _remove_old_exports(folder)
            table = self._reg.export_keys()
            with open_private(path, exclusive=True) as fh:
                pacsv.write_csv(table, fh, pacsv.WriteOptions(quoting_style="needed"))
            state, message = "completed", f"{table.num_rows} keys exported"
            result = {"rows": table.num_rows, "download": f"/v1/jobs/{job_id}/result",
                      "media_type": "text/csv"}
        except Exception as exc:  # the job must end in a state; no data in the message
            state = "failed"
            path.unlink(missing_ok=True)
            errors.append({"row": None, "field": None,
                           "reason": f"export failed ({type(exc).__name__})"})
        finally:
            with contextlib.suppress(Exception):
                write_job_state(self._reg, job_id, state=state,
                                done=1 if state == "completed" else 0, message=message,
                                result=result, errors=errors)

    def result_file(self, principal_id: str, job_id: str) -> Path:
        """The file of a completed export started by ``principal_id`` (audited as
        ``keys.download``); NotFound for any other job, principal or a deleted file."""
        row = jstore.find_job(self._reg.store.cursor(), job_id)
        path = exports_dir(self._reg) / f"{job_id}.csv"
        if row is None or row["principal_id"] != principal_id or row["kind"] != "keys_export" \
                or row["state"] != "completed" or not path.is_file():
            raise NotFound("no downloadable result for this job (only the principal that "
                           "started a completed export may download it)")
        self._reg.record_audit([AuditEntry(principal_id, "keys.download", "registry",
                                           detail={"job_id": job_id})])
        return path

    # ---- the job table ----------------------------------------------------------------
    def _insert(self, job_id: str, principal_id: str, *, kind: str, total: int,
                audit: AuditEntry) -> None:
        with self._reg.audited_transaction([audit]) as cur:
            jstore.insert_job(cur, job_id=job_id, principal_id=principal_id, agency=None,
                              kind=kind, total=total, now=self._reg.clock())

    def wait(self, timeout: float | None = None) -> None:
        """Wait for running re-link and export jobs (tests; shutdown drains the runner)."""
        self._background.wait(timeout, group="relink")
        self._background.wait(timeout, group="export")


def _remove_old_exports(folder: Path) -> None:
    cutoff = time.time() - EXPORT_RETENTION_S
    for old in folder.glob("job_*.csv"):
        with contextlib.suppress(OSError):
            if old.stat().st_mtime < cutoff:
                old.unlink()
