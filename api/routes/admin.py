"""Admin routes: agencies and principals (API keys are shown once, on create and rotate), and
backups taken by the running service (Decision 70)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel

from api.auth import Caller
from api.errors import errors
from api.schemas.common import (
    AgenciesOut,
    AgencyIn,
    AgencyOut,
    AgencyUpdateIn,
    HumanIn,
    PrincipalIn,
    PrincipalKeyOut,
    PrincipalOut,
    PrincipalsOut,
)
from api.state import AccessDep
from mpi.audit import AuditEntry
from mpi.backup import BACKUPS_DIR, backup_registry

router = APIRouter(tags=["admin"])
PrincipalId = Annotated[str, Path(min_length=1, max_length=64)]


@router.post("/v1/agencies", response_model=AgencyOut, status_code=201,
             summary="Register an agency", description="Agencies must exist before principals "
             "are bound to them.", responses=errors(409))
def create_agency(body: AgencyIn, caller: Caller, access: AccessDep) -> Any:
    """Register an agency."""
    return access.create_agency(caller, body.agency, key_scope=body.key_scope)


@router.patch("/v1/agencies/{agency}", response_model=AgencyOut,
              summary="Change an agency's key scope",
              description="`key_scope` `agency` gives the agency keys derived for it alone; "
              "keys it was given before under the other scope no longer resolve for it "
              "(Decision 72).", responses=errors(404))
def update_agency(agency: Annotated[str, Path(min_length=1, max_length=64)],
                  body: AgencyUpdateIn, caller: Caller, access: AccessDep) -> Any:
    """Change an agency's settings."""
    return access.update_agency(caller, agency, key_scope=body.key_scope)


@router.get("/v1/agencies", response_model=AgenciesOut, summary="List agencies",
            description="Every registered agency.")
def list_agencies(caller: Caller, access: AccessDep) -> Any:
    """List agencies."""
    return {"agencies": access.list_agencies(caller)}


@router.post("/v1/principals", response_model=PrincipalKeyOut, status_code=201,
             summary="Create a principal and its API key",
             description="The key is returned this once and stored only as a SHA-256 hash. Roles "
             "`agency` and `approver` need an existing `agency`. Roles held by a person need "
             "`human_email`; one human holds at most one active principal (409 otherwise; "
             "Decision 80).", responses=errors(409, 422))
def create_principal(body: PrincipalIn, caller: Caller, access: AccessDep) -> Any:
    """Create a principal."""
    row, key = access.create_principal(caller, body.name, role=body.role, agency=body.agency,
                                       human_email=body.human_email)
    return {"principal": row, "api_key": key}


@router.put("/v1/principals/{principal_id}/human", response_model=PrincipalOut,
            summary="Set the person behind a principal",
            description="For a principal created before Decision 80 (it may not approve until "
            "it has one). Set once: 409 when it has one already, when another active principal "
            "belongs to the same human (address case-folded, `+tag` ignored), or when it is "
            "revoked; 422 for role `agency` or a malformed address. Audited.",
            responses=errors(404, 409, 422))
def set_human(principal_id: PrincipalId, body: HumanIn, caller: Caller,
              access: AccessDep) -> Any:
    """Set a principal's human identity."""
    return access.set_human(caller, principal_id, body.human_email)


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


class BackupOut(BaseModel):
    """Where the server wrote a backup, and its manifest's counts."""

    file: str
    bytes: int
    files: int
    records: dict[str, int]
    persons: dict[str, int]
    audit_events: int


@router.post("/v1/admin/backup", response_model=BackupOut, status_code=201,
             summary="Back up the running registry",
             description="The service folds its journal, checkpoints and copies the registry "
             "file under its write lock (writers wait only for that copy), then writes a tar "
             "with the data directory's secrets, keys and models and a SHA-256 manifest to "
             "`DATA_DIR/backups/` (0600). Restore with `mpi restore --from FILE`.")
def create_backup(caller: Caller, access: AccessDep) -> Any:
    """Back up the registry while it serves."""
    reg = access.registry
    name = f"mpi-backup-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S%fZ')}.tar"
    target = f"backup:{name}"
    with reg.refusals_audited(caller.principal_id, "backup.create", target):
        out = reg.settings.data_dir / BACKUPS_DIR / name
        manifest = backup_registry(reg, out)
    counts = manifest["counts"]
    reg.record_audit([AuditEntry(caller.principal_id, "backup.create", target,
                                 detail={"files": len(manifest["files"]),
                                         "audit_events": counts["audit_events"]})])
    return {"file": f"{BACKUPS_DIR}/{name}", "bytes": out.stat().st_size,
            "files": len(manifest["files"]), "records": counts["records"],
            "persons": counts["persons"], "audit_events": counts["audit_events"]}
