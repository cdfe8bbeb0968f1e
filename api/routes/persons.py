"""Routes for matching a record against persons and reading a person key.

``async`` handlers that run the registry call on a worker thread (one thread hop a request;
see api/routes/records.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool

from api.auth import Caller
from api.errors import errors
from api.schemas.common import MatchIn, MatchOut, PersonOut
from api.state import AccessDep

router = APIRouter(tags=["persons"])


@router.post(
    "/v1/match", response_model=MatchOut, summary="Score a tokenized record without storing it",
    description="Candidates are graded in the manner of FHIR `$match`: `certain` at or above the "
    "model's link threshold, `probable` in the review band, `possible` above probability 0.05. "
    "An agency with `key_scope` `agency` gets only persons it holds, by its own keys: a person "
    "held only by other agencies is no candidate (Decision 72).")
async def match(body: MatchIn, caller: Caller, access: AccessDep,
                limit: Annotated[int, Query(ge=1, le=50)] = 10) -> Any:
    """Score one record."""
    return await run_in_threadpool(
        access.match, caller, body.model_dump(exclude_unset=True, exclude={"source_record_id"}),
        limit=limit)


@router.get(
    "/v1/persons/{person_key}", response_model=PersonOut, summary="Read a person key",
    description="Status `active` or `retired`, `superseded_by` for a retired key, and the linked "
    "records the caller may see: an agency sees only its own records, never other agencies' "
    "source ids; a steward sees all. An agency reads only a person it holds (an active record "
    "on the key, or on a successor of a retired key), and only the successors it holds; any "
    "other key is the same 404 as an unknown one. An agency with `key_scope` `agency` names "
    "persons by its own keys only (Decision 72).", responses=errors(404))
async def read_person(person_key: Annotated[str, Path(min_length=1, max_length=64)],
                      caller: Caller, access: AccessDep) -> Any:
    """Read one person key."""
    return await run_in_threadpool(access.read_person, caller, person_key)
