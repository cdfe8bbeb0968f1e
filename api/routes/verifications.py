"""Verification routes: a steward asks the agencies holding a review item's pair to verify it;
each agency lists and answers its own tasks (Decision 88)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query

from api.auth import Caller
from api.errors import errors
from api.schemas.verification import (
    AgencyTaskOut,
    AgencyTasksPageOut,
    AnswerIn,
    VerificationIn,
    VerificationOut,
)
from api.state import DeskDep

router = APIRouter(tags=["verification"])
Id = Annotated[int, Path(ge=1, le=2**62)]


@router.post(
    "/v1/review/{item_id}/verification", response_model=VerificationOut,
    summary="Ask the agencies to verify a review item's pair",
    description="The best record pair across the item's current sides becomes one task per "
    "agency holding one of its records (one task naming both when one agency holds both). "
    "Each agency's principals see only their own source record id(s), never the other "
    "agency's record id, a person key or a score (`GET /v1/verifications`). The item must be "
    "`open` or `deferred` (409 otherwise, or while earlier tasks are unanswered). Answers show "
    "on `GET /v1/review/{item_id}`; they do not decide the item. Audited as "
    "`verification.request`.", responses=errors(404, 409, 422))
def request_verification(item_id: Id, body: VerificationIn, caller: Caller,
                         desk: DeskDep) -> Any:
    """Create the verification tasks of a review item."""
    return desk.request_verification(caller, item_id, question=body.question)


@router.get(
    "/v1/verifications", response_model=AgencyTasksPageOut,
    summary="List the calling agency's verification tasks",
    description="Oldest first; `status` `open` or `answered` (default: both). Each task shows "
    "the question and the agency's own source record id(s) only. Audited as "
    "`verification.list`.", responses=errors(422))
def list_verifications(
    caller: Caller, desk: DeskDep,
    status: Annotated[Literal["open", "answered"] | None, Query()] = None,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Any:
    """A page of the agency's tasks."""
    return desk.list_verifications(caller, status=status, after=after, limit=limit)


@router.post(
    "/v1/verifications/{task_id}/answer", response_model=AgencyTaskOut,
    summary="Answer a verification task",
    description="`same`, `different` or `unsure`, with an optional note for the steward. "
    "Another agency's task is a 404; an answered task a 409. Audited as "
    "`verification.answer`.", responses=errors(404, 409, 422))
def answer_verification(task_id: Id, body: AnswerIn, caller: Caller, desk: DeskDep) -> Any:
    """Record the agency's answer."""
    return desk.answer_verification(caller, task_id, answer=body.answer, note=body.note)
