"""Background model training: a ``model_train`` job in the job table, with progress.

Owns: starting ``train_candidate`` on a thread for a steward, and recording its progress (step
counts and the latest message), its outcome and the trained version in the ``job`` table,
where ``GET /v1/jobs/{job_id}`` reads it; and how any steward job writes its state and a
failure's reason (``write_job_state``, ``failure_reason``; registryjobs.py uses them too). The
candidate is never activated. Must not: run SQL
(mpi/store/jobs.py), know about HTTP, or activate anything.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from typing import TYPE_CHECKING, Any

from mpi.audit import AuditEntry
from mpi.errors import MpiError
from mpi.linkage.catalog import candidates_dir
from mpi.linkage.definition import DEFAULT_DEFINITION
from mpi.linkage.modelfile import Thresholds
from mpi.steward.training import check_training_options, train_candidate
from mpi.store import jobs as jstore

if TYPE_CHECKING:
    from mpi.identity.registry import Registry

# export, prior, u sampling, one EM pass per training blocking rule, save
_FIXED_STEPS = 4


class TrainingJobs:
    """Runs model training jobs of one registry on background threads (one at a time)."""

    def __init__(self, registry: Registry) -> None:
        self._reg = registry
        self._background = registry.background

    def submit(self, principal_id: str, *, seed: int = 42, sample: float = 1.0,
               name: str = "candidate", link: float | None = None,
               review: float | None = None) -> str:
        """Start training a candidate; returns the job id (409 while another one runs)."""
        reg = self._reg
        th = reg.model.thresholds
        thresholds = Thresholds(link=th.link if link is None else link,
                                review=th.review if review is None else review)
        check_training_options(reg, name=name, fraction=sample, thresholds=thresholds)
        chosen = None if link is None and review is None else thresholds  # None: from the model
        job_id = "job_" + secrets.token_hex(8)
        self._background.reserve(job_id, group="train", exclusive=True,
                                 busy="a training job is already running; wait for it to finish")
        try:
            total = _FIXED_STEPS + len(DEFAULT_DEFINITION.training_blocking_rules)
            entry = AuditEntry(principal_id, "models.train", f"model:{name}",
                               detail={"job_id": job_id, "seed": seed, "sample": sample,
                                       "link": thresholds.link, "review": thresholds.review})
            with reg.audited_transaction([entry]) as cur:
                jstore.insert_job(cur, job_id=job_id, principal_id=principal_id, agency=None,
                                  kind="model_train", total=total, now=reg.clock())
            self._background.start(job_id, self._run, job_id, seed, sample, name, chosen)
        except BaseException:
            self._background.release(job_id)
            raise
        return job_id

    def wait(self, timeout: float | None = None) -> None:
        """Wait for running training jobs (tests; shutdown drains the registry's runner)."""
        self._background.wait(timeout, group="train")

    def _run(self, job_id: str, seed: int, sample: float, name: str,
             thresholds: Thresholds | None) -> None:
        total = _FIXED_STEPS + len(DEFAULT_DEFINITION.training_blocking_rules)
        done = 0
        state, message = "running", "exporting records"
        result: dict[str, Any] | None = None
        errors: list[dict[str, Any]] = []

        out_dir = candidates_dir(self._reg.settings)

        def progress(msg: str) -> None:
            nonlocal done, message
            done = min(done + 1, total - 1)  # the last step is the job's completion
            msg = msg.replace(str(out_dir), "DATA_DIR/models")  # no server path in the job
            message = msg
            write_job_state(self._reg, job_id, state="running", done=done, message=msg)

        try:
            write_job_state(self._reg, job_id, state=state, done=0, message=message)
            version = train_candidate(self._reg, out_dir=out_dir,
                                      name=name, seed=seed, fraction=sample, progress=progress,
                                      thresholds=thresholds)
            state, result, done = "completed", {"version": version}, total
            message = f"trained {version}; it is not active"
        except Exception as exc:  # the job must end in a state
            state = "failed"
            errors.append(failure_reason(exc, "training"))
        finally:
            with contextlib.suppress(Exception):
                write_job_state(self._reg, job_id, state=state, done=done, message=message,
                                result=result, errors=errors)


def write_job_state(registry: Registry, job_id: str, *, state: str, done: int,
                    message: str | None, result: dict[str, Any] | None = None,
                    errors: list[dict[str, Any]] | None = None) -> None:
    """Record a steward job's state, progress, latest message, result and errors."""
    with registry.store.transaction() as cur:
        jstore.update_job(cur, job_id, state=state, done=done, counts="{}",
                          errors=json.dumps(errors or []), now=registry.clock())
        jstore.update_job_message(cur, job_id, message=message,
                                  result=json.dumps(result) if result else None,
                                  now=registry.clock())


def failure_reason(exc: Exception, what: str) -> dict[str, Any]:
    """A failed job's error row: an MpiError's own message, else only ``<what> failed (<type>)``
    (an unexpected exception's message may hold data)."""
    reason = exc.message if isinstance(exc, MpiError) else f"{what} failed ({type(exc).__name__})"
    return {"row": None, "field": None, "reason": reason}


def trainer_for(registry: Registry) -> TrainingJobs:
    """The training jobs of an open registry (their state lives in its background runner)."""
    return TrainingJobs(registry)
