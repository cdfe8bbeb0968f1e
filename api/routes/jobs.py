"""Routes for bulk uploads and the background jobs that enrol them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Path, UploadFile

from api.auth import Caller
from api.errors import errors
from api.schemas.common import JobOut
from api.state import JobsDep

router = APIRouter(tags=["bulk"])


@router.post(
    "/v1/bulk", response_model=JobOut, status_code=202,
    summary="Upload a JSONL or Parquet token file and start a background job",
    description="Multipart upload (field `file`, name ending `.jsonl`, `.ndjson`, `.json` or "
    "`.parquet`). The job enrols the file in chunks of `MPI_BULK_CHUNK` records, one "
    "transaction each. Unlike `POST /v1/records`, a bad row does not stop the file: it is "
    "refused and listed in the job's `errors` with row and field; the valid rows are stored.")
def upload_bulk(file: Annotated[UploadFile, File(description="The token file.")], caller: Caller,
                jobs: JobsDep) -> Any:
    """Start a bulk job."""
    return jobs.submit_bulk(caller, stream=file.file, filename=file.filename or "")


@router.get(
    "/v1/jobs/{job_id}", response_model=JobOut, summary="A job's state, progress, counts, errors",
    description="Agencies see their own agency's jobs only.", responses=errors(404))
def read_job(job_id: Annotated[str, Path(min_length=1, max_length=64)], caller: Caller,
             jobs: JobsDep) -> Any:
    """Read one job."""
    return jobs.get_job(caller, job_id)
