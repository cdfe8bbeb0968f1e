"""Auditor routes: page through the hash-chained audit log and verify it."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.auth import Caller
from api.schemas.common import AuditPageOut, AuditVerifyOut
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
            description="Reports OK on an intact log, or the first edited, deleted or reordered "
            "event.")
def verify_audit(caller: Caller, access: AccessDep) -> Any:
    """Verify the chain."""
    v = access.registry.verify_audit()
    return {"ok": v.ok, "events": v.events, "first_bad_seq": v.first_bad_seq, "reason": v.reason}
