"""Routes for an agency's source records: create (batch), read, replace, withdraw.

The handlers are ``async`` and hand the registry call to a worker thread themselves: FastAPI
would otherwise use one thread hop for a sync handler and another for validating its response.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query
from fastapi.concurrency import run_in_threadpool

from api.auth import Caller
from api.errors import errors
from api.schemas.common import RecordOut, RecordReplaceIn, RecordResultOut, RecordsIn, RecordsOut
from api.state import AccessDep

router = APIRouter(prefix="/v1/records", tags=["records"])
Sid = Annotated[str, Path(min_length=1, max_length=128, description="The agency's record id.")]


@router.post(
    "", response_model=RecordsOut, summary="Enrol a batch of tokenized records",
    description="Validates every record; when any is invalid the whole batch is refused with 422 "
    "naming each record (1-based `row`), field and reason, and **nothing is stored** (all or "
    "none). Otherwise each record is matched and stored with its person key. Re-sending a "
    "record unchanged is a no-op (`unchanged`). With an `Idempotency-Key` header, the same key "
    "and body return the stored response; the same key with another body is a 409. A key is "
    "kept for `MPI_IDEMPOTENCY_RETENTION_HOURS` (7 days by default), then forgotten.",
    responses=errors(409))
async def create_records(
    body: RecordsIn, caller: Caller, access: AccessDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None,
) -> Any:
    """Enrol a batch for the caller's agency."""
    def run() -> Any:
        return access.create_records(caller, [r.model_dump(exclude_unset=True) for r in body.records],
                                     idempotency_key=idempotency_key)
    return await run_in_threadpool(run)


@router.get(
    "/{source_record_id}", response_model=RecordOut, summary="Read one of the agency's records",
    description="The caller agency's record (active or withdrawn) and its current person key; "
    "never its tokens. Stewards name the agency with `?agency=`.", responses=errors(404))
async def read_record(
    source_record_id: Sid, caller: Caller, access: AccessDep,
    agency: Annotated[str | None, Query(max_length=64, description="Stewards only.")] = None,
) -> Any:
    """Read one record."""
    return await run_in_threadpool(access.read_record, caller, source_record_id, agency=agency)


@router.put(
    "/{source_record_id}", response_model=RecordResultOut, summary="Replace one record",
    description="Stores a new version of the record and re-matches it. The id in the path wins: "
    "a body `source_record_id` that differs is refused with 422.", responses=errors(404))
async def replace_record(source_record_id: Sid, body: RecordReplaceIn, caller: Caller,
                         access: AccessDep) -> Any:
    """Replace one record."""
    return await run_in_threadpool(access.replace_record, caller, source_record_id,
                                   body.model_dump(exclude_unset=True))


@router.delete(
    "/{source_record_id}", response_model=RecordResultOut, summary="Withdraw one record",
    description="Withdraws the record (kept as a tombstone). A person key left with no records "
    "is retired and stays resolvable by a steward.", responses=errors(404))
async def withdraw_record(source_record_id: Sid, caller: Caller, access: AccessDep) -> Any:
    """Withdraw one record."""
    return await run_in_threadpool(access.withdraw_record, caller, source_record_id)
