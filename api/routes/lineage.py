"""Route of a person key's lineage graph (merges and splits), for stewards."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.concurrency import run_in_threadpool

from api.auth import Caller
from api.errors import errors
from api.schemas.lineage import LineageOut
from api.state import DeskDep

router = APIRouter(tags=["stewardship"])


@router.get(
    "/v1/persons/{person_key}/lineage", response_model=LineageOut, responses=errors(404),
    summary="A person key's lineage: the merges and splits around it",
    description="The key's ancestry (every key merged into it or split off into it, over any "
    "number of steps) and its descendants (the keys it was merged or split into), as `nodes` "
    "(each key with its status and `generation`) and `events` (edges `from_key` -> `to_key` "
    "with kind, key event, cause, model version and time, oldest first; at most 500). "
    "Stewards only: the graph names keys of other agencies' persons. Audited as "
    "`persons.lineage`. 404 for an unknown key.")
async def person_lineage(person_key: Annotated[str, Path(min_length=1, max_length=64)],
                         caller: Caller, desk: DeskDep) -> Any:
    """Read a person key's lineage graph."""
    return await run_in_threadpool(desk.person_lineage, caller, person_key)
