"""Routes of the steward's long actions, run as background jobs: re-link, keys export, and
downloading a job's result file (Decision 84)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path
from fastapi.responses import FileResponse

from api.auth import Caller
from api.errors import errors
from api.schemas.common import JobOut
from api.schemas.stewardjobs import LinkIn
from api.state import DeskDep, JobsDep

router = APIRouter(tags=["stewardship"])
JobId = Annotated[str, Path(min_length=1, max_length=64)]


@router.post(
    "/v1/link", response_model=JobOut, status_code=202, responses=errors(409, 422),
    summary="Re-link the whole registry in the background",
    description="Starts a `relink` job: every active record is predicted and clustered with "
    "the active model, constraints and kept-apart persons are honoured, and keys are carried "
    "over to the new clusters (keys follow the majority of their records; retired keys "
    "forward), as `mpi link` does on a stopped registry. Splink computes on a copy of the "
    "records without the registry's write lock, so records, matches and reads keep being "
    "served; the lock is held only to check that no record changed meanwhile and to commit "
    "(`result.write_lock_seconds`). If records changed, it computes again; after two tries "
    "it computes under the lock (online writes wait). Poll `GET /v1/jobs/{job_id}` for "
    "`done`/`total`, `message` and `result` (the churn). One re-link at a time (else 409). "
    "Audited as `persons.relink_requested` and, with the commit, `persons.relink`.")
def relink(caller: Caller, desk: DeskDep, jobs: JobsDep,
           body: Annotated[LinkIn | None, Body()] = None) -> Any:
    """Start a re-link job."""
    job_id = desk.relink(caller, engine=(body or LinkIn()).engine)
    return jobs.get_job(caller, job_id)


@router.post(
    "/v1/keys/export", response_model=JobOut, status_code=202,
    summary="Export every active record's person key in the background",
    description="Starts a `keys_export` job writing `agency,source_record_id,person_key` for "
    "every active record to a private CSV on the server (`DATA_DIR/exports`, 0600), as `mpi "
    "keys export` does. When the job is `completed`, `result.download` names "
    "`GET /v1/jobs/{job_id}/result`; only the principal that started it may download it. A "
    "file is deleted when a later export starts more than a day after it. Audited as "
    "`keys.export`.")
def export_keys(caller: Caller, desk: DeskDep, jobs: JobsDep) -> Any:
    """Start a keys export job."""
    return jobs.get_job(caller, desk.export_keys(caller))


@router.get(
    "/v1/jobs/{job_id}/result", responses={
        200: {"content": {"text/csv": {}}, "description": "The job's result file."},
        **errors(404)},
    summary="Download a finished job's result file",
    description="The CSV of a completed `keys_export` job, for the principal that started "
    "it (404 for anyone else, any other job, or a job not completed). Audited as "
    "`keys.download`.")
def job_result(job_id: JobId, caller: Caller, desk: DeskDep) -> FileResponse:
    """Download a job's result."""
    path = desk.job_result_file(caller, job_id)
    return FileResponse(path, media_type="text/csv", filename=f"keys-{job_id}.csv")
