"""Auditor routes: page through the hash-chained audit log, verify it, fetch its signed
checkpoints."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.auth import Caller
from api.schemas.common import AuditCheckpointsOut, AuditPageOut, AuditVerifyOut
from api.state import AccessDep

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("", response_model=AuditPageOut, summary="Page through the audit log",
            description="Events with `audit_seq > after`, oldest first; `next_after` is null on "
            "the last page. Reading the log is not "
            "itself audited (paging would never reach the end).")
def list_audit(caller: Caller, access: AccessDep,
               after: Annotated[int, Query(ge=0, le=2**62)] = 0,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
    """One page of audit events."""
    events = access.registry.list_audit(after=after, limit=limit)
    for e in events:
        e["detail"] = json.loads(e["detail"]) if e["detail"] else None
    # null on the last page (like review items and constraints), so a paging loop ends
    return {"events": events, "next_after": events[-1]["audit_seq"] if len(events) == limit else None}


@router.get("/verify", response_model=AuditVerifyOut, summary="Verify the audit hash chain",
            description="Reports OK on an intact log that reaches its latest signed checkpoint, "
            "or the first edited, deleted or reordered event, or the truncation.")
def verify_audit(caller: Caller, access: AccessDep) -> Any:
    """Verify the chain."""
    v = access.registry.verify_audit()
    return {"ok": v.ok, "events": v.events, "first_bad_seq": v.first_bad_seq, "reason": v.reason,
            "anchored": v.anchored}


@router.get("/checkpoints", response_model=AuditCheckpointsOut,
            summary="Signed audit checkpoints",
            description="The newest `limit` signed checkpoints (event count and head hash), oldest "
            "first, with the Ed25519 public key that verifies them; the current head is "
            "checkpointed first. Keep them: a later log that does not reach a checkpoint's count "
            "or hash was truncated or re-hashed (decision 0069).")
def audit_checkpoints(caller: Caller, access: AccessDep,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
    """Signed checkpoints and the public key."""
    return access.registry.audit_anchor.published(limit)
