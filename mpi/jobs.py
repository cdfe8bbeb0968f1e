"""Background bulk-upload jobs: save the uploaded token file, enrol it in chunks on a thread.

Owns: the life of a bulk job (queued → running → completed | failed; ``interrupted`` when the
process stopped under it), its progress, outcome counts and per-row errors in the ``job``
table, and which principal may see which job, and the uploaded file (0600 in a 0700
``uploads`` directory, deleted when its job ends in any state and, for jobs a crashed process
left behind, at the next start: decision 0066). Each chunk is enrolled in one transaction with
its audit event; a bad row is refused with row, field and reason and does not stop the file.
Must not: run SQL (mpi/store/jobs.py) or know about HTTP.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from mpi.agency.tokenfile import iter_chunks
from mpi.audit import AuditEntry
from mpi.errors import InvalidInput, MpiError, NotFound, Problem
from mpi.files import open_private, private_dir
from mpi.identity.results import EnrolResult
from mpi.identity.scoped_keys import held_counts
from mpi.principals import Principal
from mpi.store import jobs as jstore

if TYPE_CHECKING:
    from mpi.identity.registry import Registry

MAX_STORED_ERRORS = 1000
_SUFFIXES = {".jsonl": ".jsonl", ".ndjson": ".jsonl", ".json": ".jsonl", ".parquet": ".parquet"}
CountsHook = Callable[[dict[str, int]], None]


def _count_rows(path: Path) -> int:
    if path.suffix == ".parquet":
        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except (pa.ArrowInvalid, OSError):
            raise InvalidInput("the upload is not a readable Parquet file", problems=[
                Problem(None, "file", "not a readable Parquet file")]) from None
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def _job_out(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row[k] for k in ("job_id", "kind", "state", "agency", "total", "done",
                               "created_at", "updated_at")}
    out["counts"] = json.loads(row["counts"] or "{}")
    out["errors"] = json.loads(row["errors"] or "[]")
    out["message"] = row.get("message")
    out["result"] = json.loads(row["result"]) if row.get("result") else None
    return out


class JobRunner:
    """Runs bulk jobs of one registry on background threads."""

    def __init__(self, registry: Registry, *, uploads_dir: Path, chunk: int,
                 on_counts: CountsHook | None = None) -> None:
        self._reg = registry
        self._uploads = uploads_dir
        self._chunk = max(1, chunk)
        self._on_counts = on_counts
        self._background = registry.background
        with registry.store.transaction() as cur:
            jstore.interrupt_unfinished_jobs(cur, now=registry.clock())
        self._remove_leftover_uploads()

    def _remove_leftover_uploads(self) -> None:
        """Delete uploads of jobs just marked interrupted: raw agency tokens, not re-keyed."""
        if self._uploads.is_dir():
            private_dir(self._uploads)  # one an earlier version made 0755
            for path in self._uploads.glob("job_*"):
                path.unlink(missing_ok=True)

    def submit_bulk(self, principal: Principal, *, stream: BinaryIO,
                    filename: str) -> dict[str, Any]:
        """Save an uploaded JSONL or Parquet token file and start enrolling it; the queued job."""
        agency = principal.agency
        if principal.role != "agency" or agency is None:
            raise InvalidInput("only agency principals upload records")
        suffix = _SUFFIXES.get(Path(filename or "").suffix.lower())
        if suffix is None:
            raise InvalidInput("unsupported upload", problems=[Problem(
                None, "file", "file name must end in .jsonl, .ndjson, .json or .parquet")])
        job_id = "job_" + secrets.token_hex(8)
        self._background.reserve(job_id, group="bulk")
        private_dir(self._uploads)
        path = self._uploads / f"{job_id}{suffix}"
        try:
            with open_private(path, exclusive=True) as out:
                shutil.copyfileobj(stream, out, 1 << 20)
            total = _count_rows(path)
            entry = AuditEntry(principal.principal_id, "records.bulk_upload",
                               f"agency:{agency}/records", detail={"job_id": job_id, "rows": total})
            with self._reg.audited_transaction([entry]) as cur:
                jstore.insert_job(cur, job_id=job_id, principal_id=principal.principal_id,
                                  agency=agency, kind="bulk_enrol", total=total, now=self._reg.clock())
            self._background.start(job_id, self._run, job_id, principal, path)
        except BaseException:
            path.unlink(missing_ok=True)
            self._background.release(job_id)
            raise
        return self.get_job(principal, job_id)

    def get_job(self, principal: Principal, job_id: str) -> dict[str, Any]:
        """A job's state; agency principals see only their own agency's jobs (else NotFound)."""
        row = jstore.find_job(self._reg.store.cursor(), job_id)
        if row is None or (principal.role == "agency" and row["agency"] != principal.agency):
            raise NotFound("no such job")
        return _job_out(row)

    def wait(self, timeout: float | None = None) -> None:
        """Wait for running bulk jobs to finish (tests); shutdown drains the registry's
        background runner, which stops them after their current chunk."""
        self._background.wait(timeout, group="bulk")

    def _update(self, job_id: str, *, state: str, done: int, counts: dict[str, int],
                errors: list[dict[str, Any]]) -> None:
        with self._reg.store.transaction() as cur:
            jstore.update_job(cur, job_id, state=state, done=done, counts=json.dumps(counts),
                              errors=json.dumps(errors), now=self._reg.clock())

    def _held(self, agency: str) -> Callable[[list[str]], dict[str, int]]:
        return lambda keys: held_counts(self._reg, agency, keys)

    def _run(self, job_id: str, principal: Principal, path: Path) -> None:
        agency = principal.agency
        assert agency is not None
        counts: dict[str, int] = {}
        errors: list[dict[str, Any]] = []
        done, state = 0, "running"
        try:
            self._update(job_id, state=state, done=0, counts=counts, errors=errors)
            for rows, problems in iter_chunks(path, chunk=self._chunk):
                if self._background.stopping.is_set():
                    state = "interrupted"
                    break
                entry = AuditEntry(principal.principal_id, "records.bulk", f"agency:{agency}/records",
                                   detail={"job_id": job_id, "rows": len(rows) + len(problems)})
                res = self._reg.enrol_records(agency, rows, audit=[entry])
                if self._reg.key_scopes.is_scoped(agency):  # counts as the agency sees them
                    res = EnrolResult(self._reg.key_scopes.view_results(
                        agency, res.results, self._held(agency)), res.problems)
                chunk_counts = res.counts()
                bad = problems + res.problems
                chunk_counts.pop("rejected", None)
                rejected = len({p.row for p in bad})
                if rejected:
                    chunk_counts["rejected"] = rejected
                for k, v in chunk_counts.items():
                    counts[k] = counts.get(k, 0) + v
                room = MAX_STORED_ERRORS - len(errors)
                errors.extend({"row": p.row, "field": p.field, "reason": p.reason}
                              for p in sorted(bad, key=lambda p: p.row or 0)[:max(room, 0)])
                done += len(rows) + len({p.row for p in problems})
                if self._on_counts is not None:
                    self._on_counts(chunk_counts)
                self._update(job_id, state=state, done=done, counts=counts, errors=errors)
            if state == "running":
                state = "completed"
        except MpiError as exc:
            state = "failed"
            errors.append({"row": None, "field": "file", "reason": exc.message})
        except Exception as exc:  # the job must end in a state; the message may hold data
            state = "failed"
            errors.append({"row": None, "field": None,
                           "reason": f"internal error ({type(exc).__name__})"})
        finally:
            path.unlink(missing_ok=True)
            # registry closed under us: the next start marks the job interrupted
            with contextlib.suppress(Exception):
                self._update(job_id, state=state, done=done, counts=counts, errors=errors)
