"""Routes for a person's research consent (opt-out / opt-in with provenance, Decision 79).

Each handler calls one principal-first method of ``PersonConsent`` over the open registry
(a stateless service object, built per request from the registry the ``Access`` dependency
holds)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from api.auth import Caller
from api.errors import errors
from api.schemas.consent import ConsentIn, ConsentOut
from api.state import AccessDep
from mpi.identity.consent import PersonConsent

router = APIRouter(tags=["persons"])
PersonKey = Annotated[str, Path(min_length=1, max_length=64)]


async def get_consent(access: AccessDep) -> PersonConsent:
    """The consent use cases of the open registry (503 while it is not open)."""
    return PersonConsent(access.registry)


ConsentDep = Annotated[PersonConsent, Depends(get_consent)]

_WHO = ("An agency only for a person it holds an active record of (by its scoped key when its "
        "`key_scope` is `agency`), and only its own scope: any other key is the same 404 as an "
        "unknown one, so the answer never tells that another agency holds the person. A steward "
        "for any active person. A retired key is 409 (its successor carries the consent).")


@router.get(
    "/v1/persons/{person_key}/consent", response_model=ConsentOut,
    summary="Read a person's research consent",
    description="The recorded opt-outs and opt-ins (source agency, date, reason, recording "
    "principal) and the latest decision per scope. " + _WHO + " Audited, refusals too.",
    responses=errors(404, 409))
def read_consent(person_key: PersonKey, caller: Caller, consent: ConsentDep) -> Any:
    """Read a person's consent."""
    return consent.read(caller, person_key)


@router.post(
    "/v1/persons/{person_key}/consent", response_model=ConsentOut, status_code=201,
    summary="Record a person's opt-out or opt-in",
    description="`opt_out` excludes the person from every later extract build and download, "
    "whatever their records say (it follows the person through merges, and into every part of "
    "a split); a delivered package that includes the person is flagged on its extract "
    "(`recall`) and its next download refused until rebuilt. `opt_in` (with a `reason`) lifts "
    "an opt-out of its own scope only: an agency can never lift another agency's or the "
    "steward's opt-out, and a person-level opt-in never lifts a record's "
    "`research_consent: false`. A record refreshed without `research_consent` never changes "
    "anything here. " + _WHO + " Entries are never changed or deleted; every one is audited.",
    responses=errors(404, 409, 422))
def record_consent(person_key: PersonKey, body: ConsentIn, caller: Caller,
                   consent: ConsentDep) -> Any:
    """Record an opt-out or opt-in."""
    return consent.record(caller, person_key, decision=body.decision, reason=body.reason,
                          date=body.date, source_agency=body.source_agency)
