"""Admin routes: agencies and principals (API keys are shown once, on create and rotate)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from api.auth import Caller
from api.errors import errors
from api.schemas.common import (
    AgenciesOut,
    AgencyIn,
    AgencyOut,
    PrincipalIn,
    PrincipalKeyOut,
    PrincipalOut,
    PrincipalsOut,
)
from api.state import AccessDep

router = APIRouter(tags=["admin"])
PrincipalId = Annotated[str, Path(min_length=1, max_length=64)]


@router.post("/v1/agencies", response_model=AgencyOut, status_code=201,
             summary="Register an agency", description="Agencies must exist before principals "
             "are bound to them.", responses=errors(409))
def create_agency(body: AgencyIn, caller: Caller, access: AccessDep) -> Any:
    """Register an agency."""
    return access.create_agency(caller, body.agency)


@router.get("/v1/agencies", response_model=AgenciesOut, summary="List agencies",
            description="Every registered agency.")
def list_agencies(caller: Caller, access: AccessDep) -> Any:
    """List agencies."""
    return {"agencies": access.list_agencies(caller)}


@router.post("/v1/principals", response_model=PrincipalKeyOut, status_code=201,
             summary="Create a principal and its API key",
             description="The key is returned this once and stored only as a SHA-256 hash. Roles "
             "`agency` and `approver` need an existing `agency`.")
def create_principal(body: PrincipalIn, caller: Caller, access: AccessDep) -> Any:
    """Create a principal."""
    row, key = access.create_principal(caller, body.name, role=body.role, agency=body.agency)
    return {"principal": row, "api_key": key}


@router.get("/v1/principals", response_model=PrincipalsOut, summary="List principals",
            description="Every principal, revoked ones too; never a key.")
def list_principals(caller: Caller, access: AccessDep) -> Any:
    """List principals."""
    return {"principals": access.list_principals(caller)}


@router.post("/v1/principals/{principal_id}/revoke", response_model=PrincipalOut,
             summary="Revoke a principal", description="Revokes the principal and every key at "
             "once. The last active admin cannot be revoked.", responses=errors(404, 409))
def revoke_principal(principal_id: PrincipalId, caller: Caller, access: AccessDep) -> Any:
    """Revoke a principal."""
    return access.revoke_principal(caller, principal_id)


@router.post("/v1/principals/{principal_id}/rotate", response_model=PrincipalKeyOut,
             summary="Rotate a principal's API key", description="Issues a new key (shown once) "
             "and revokes the old one immediately.", responses=errors(404, 409))
def rotate_key(principal_id: PrincipalId, caller: Caller, access: AccessDep) -> Any:
    """Rotate a principal's key."""
    row, key = access.rotate_key(caller, principal_id)
    return {"principal": row, "api_key": key}
