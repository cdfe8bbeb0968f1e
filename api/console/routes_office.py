"""The console pages of approvers, researchers, auditors and admins.

Owns: extract requests (list, one request with its dictionary entries and approvals, the
approve / deny form, the researcher's request form validated by the API's own ``ExtractIn``
schema, download), the audit log with filters and chain verification, and agencies and
principals (a new or rotated key is shown once, on the page that made it). Each calls the
same principal-first use case as the JSON route (``ExtractWorkflow``, ``Access``), so it is
audited with the human's principal. Must not: run SQL, hold domain logic, or log a key.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import ValidationError

from api.schemas.extract import ExtractIn
from api.state import get_access, get_desk, get_extracts
from mpi.errors import MpiError
from mpi.principals import AGENCY_BOUND_ROLES, ROLES

from .guard import SignedIn, Viewer
from .render import failure, harden, page, see_other

router = APIRouter(prefix="/console", include_in_schema=False)
AUDIT_SCAN_PAGES = 20  # filtered audit views read at most this many pages of 1,000 events


def _text(form: Any, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


# ---- extract requests -----------------------------------------------------------------
@router.get("/extracts")
async def extracts(request: Request, viewer: SignedIn) -> HTMLResponse:
    """The extract requests the viewer may see (pending first)."""
    flow = await get_extracts(request)
    rows = (await run_in_threadpool(flow.list_requests, viewer.principal))["extracts"]
    rows.sort(key=lambda r: (r["status"] != "pending", r["created_at"]), reverse=False)
    return page(request, "extracts.html", viewer, rows=rows,
                notice=request.query_params.get("notice"))


async def _extract_page(request: Request, viewer: Viewer, extract_id: str, *, status: int = 200,
                        message: str | None = None) -> HTMLResponse:
    flow = await get_extracts(request)
    try:
        x = await run_in_threadpool(flow.get_request, viewer.principal, extract_id)
        catalogue = (await run_in_threadpool(flow.list_datasets, viewer.principal))["datasets"]
    except MpiError as exc:
        code, text = failure(exc)
        return page(request, "error.html", viewer, status=code, message=text)
    entries = {(d["agency"], d["dataset"], a["name"]): a for d in catalogue
               for a in d["attributes"]}
    attributes = [{**a, "entry": entries.get((a.get("agency"), a.get("dataset"), a.get("name")))}
                  for a in x["attributes"]]
    return page(request, "extract.html", viewer, status=status, x=x, attributes=attributes,
                message=message, notice=request.query_params.get("notice"))


@router.get("/extracts/{extract_id}")
async def extract(request: Request, extract_id: str, viewer: SignedIn) -> HTMLResponse:
    """One request: specification, dictionary entries, approvals, build and downloads."""
    return await _extract_page(request, viewer, extract_id)


@router.post("/extracts/{extract_id}/approvals")
async def decide(request: Request, extract_id: str, viewer: SignedIn) -> Response:
    """Approve or deny a request, with a reason."""
    form = await request.form()
    decision, reason = _text(form, "decision"), _text(form, "reason")
    problems = []
    if decision not in ("approve", "deny"):
        problems.append("decision: approve or deny")
    if not reason:
        problems.append("reason: say why")
    if problems:
        return await _extract_page(request, viewer, extract_id, status=422,
                                   message="; ".join(problems))
    flow = await get_extracts(request)
    try:
        await run_in_threadpool(flow.decide, viewer.principal, extract_id, decision=decision,
                                reason=reason)
    except MpiError as exc:
        code, text = failure(exc)
        return await _extract_page(request, viewer, extract_id, status=code, message=text)
    return see_other(f"/console/extracts/{extract_id}?"
                     + urlencode({"notice": f"Recorded: {decision}."}))


@router.get("/extracts/{extract_id}/download")
async def download(request: Request, extract_id: str, viewer: SignedIn) -> Response:
    """The signed package (counts as one of the request's downloads)."""
    flow = await get_extracts(request)
    try:
        package, filename = await run_in_threadpool(flow.download, viewer.principal, extract_id)
    except MpiError as exc:
        code, text = failure(exc)
        return page(request, "error.html", viewer, status=code, message=text)
    return harden(StreamingResponse(iter(lambda: package.read(1 << 20), b""),
                                    media_type="application/zip",
                                    headers={"Content-Disposition":
                                             f'attachment; filename="{filename}"'}))


async def _catalogue_page(request: Request, viewer: Viewer, *, status: int = 200,
                          errors: list[str] | None = None,
                          values: dict[str, Any] | None = None) -> HTMLResponse:
    flow = await get_extracts(request)
    catalogue = (await run_in_threadpool(flow.list_datasets, viewer.principal))["datasets"]
    default_expiry = (dt.date.today() + dt.timedelta(days=90)).isoformat()
    values = values or {"expires_at": default_expiry, "k": "5", "download_limit": "3",
                        "attributes": []}
    agencies = sorted({d["agency"] for d in catalogue})
    return page(request, "datasets.html", viewer, status=status, catalogue=catalogue,
                agencies=agencies, errors=errors or [], values=values)


@router.get("/datasets")
async def datasets(request: Request, viewer: SignedIn) -> HTMLResponse:
    """The dataset catalogue with its dictionaries, and the request form."""
    return await _catalogue_page(request, viewer)


@router.post("/extracts")
async def create_extract(request: Request, viewer: SignedIn) -> Response:
    """Submit an extract request; every problem is named by its field."""
    form = await request.form()
    values: dict[str, Any] = {k: _text(form, k) for k in (
        "title", "purpose", "agreement_ref", "cohort_agency", "k", "expires_at", "download_limit")}
    values["attributes"] = [a for a in form.getlist("attributes") if isinstance(a, str)]
    attributes = []
    for ref in values["attributes"]:
        agency, dataset, name = (ref.split("/", 2) + ["", ""])[:3]
        attributes.append({"agency": agency, "dataset": dataset, "name": name})
    errors: list[str] = []
    if not attributes:
        errors.append("attributes: choose at least one attribute")
    expires = values["expires_at"]
    body = {"title": values["title"], "purpose": values["purpose"],
            "agreement_ref": values["agreement_ref"], "attributes": attributes,
            "cohort": {"agency": values["cohort_agency"]}, "k": values["k"] or 5,
            "download_limit": values["download_limit"] or 3,
            "expires_at": f"{expires}T23:59:59Z" if len(expires) == 10 else expires}
    checked: ExtractIn | None = None
    try:
        checked = ExtractIn.model_validate(body)
    except ValidationError as exc:
        for e in exc.errors():
            field = ".".join(str(p) for p in e["loc"])
            errors.append(f"{field}: {e['msg']}")
    for name in ("title", "purpose", "agreement_ref", "cohort_agency"):
        if not values[name]:
            errors.append(f"{name}: required")
    if errors or checked is None:
        return await _catalogue_page(request, viewer, status=422, errors=sorted(set(errors)),
                                     values=values)
    flow = await get_extracts(request)
    try:
        x = await run_in_threadpool(flow.create_request, viewer.principal, checked.model_dump())
    except MpiError as exc:
        code, text = failure(exc)
        return await _catalogue_page(request, viewer, status=code, errors=[text], values=values)
    return see_other(f"/console/extracts/{x['extract_id']}?"
                     + urlencode({"notice": "Request submitted; approvers have been asked."}))


# ---- verification tasks (agencies) ----------------------------------------------------
@router.get("/verifications")
async def verifications(request: Request, viewer: SignedIn) -> HTMLResponse:
    """The calling agency's verification tasks (its own source record ids only)."""
    q = request.query_params
    status = q.get("status") if q.get("status") in ("open", "answered") else None
    desk = await get_desk(request)
    out = await run_in_threadpool(desk.list_verifications, viewer.principal, status=status,
                                  limit=100)
    return page(request, "verifications.html", viewer, tasks=out["tasks"], status_=status or "",
                notice=q.get("notice"), message=q.get("error"))


@router.post("/verifications/{task_id}/answer")
async def answer(request: Request, task_id: int, viewer: SignedIn) -> Response:
    """Answer one task: same, different or unsure, with an optional note."""
    form = await request.form()
    desk = await get_desk(request)
    try:
        await run_in_threadpool(desk.answer_verification, viewer.principal, task_id,
                                answer=_text(form, "answer"), note=_text(form, "note") or None)
    except MpiError as exc:
        return see_other("/console/verifications?" + urlencode({"error": failure(exc)[1]}))
    return see_other("/console/verifications?" + urlencode(
        {"notice": f"Task {task_id} answered."}))


# ---- the audit log --------------------------------------------------------------------
@router.get("/audit")
async def audit(request: Request, viewer: SignedIn) -> HTMLResponse:
    """Audit events after a sequence number, filtered by principal, action and outcome."""
    q = request.query_params
    want = {k: (q.get(k) or "").strip() for k in ("principal", "action", "outcome")}
    try:
        after = max(0, int(q.get("after") or 0))
    except ValueError:
        after = 0
    access = await get_access(request)
    shown: list[dict[str, Any]] = []
    cursor, scanned, end = after, 0, False
    while len(shown) < 100 and scanned < AUDIT_SCAN_PAGES:
        batch = await run_in_threadpool(access.registry.list_audit, after=cursor, limit=1000)
        scanned += 1
        for e in batch:
            cursor = e["audit_seq"]
            if all(not v or (v in str(e.get(k, "")) if k == "action" else v == e.get(k))
                   for k, v in want.items()):
                shown.append(e)
                if len(shown) == 100:
                    break
        if len(batch) < 1000 and len(shown) < 100:
            end = True
            break
    for e in shown:
        e["detail_text"] = json.dumps(json.loads(e["detail"]), sort_keys=True) if e["detail"] else ""
    next_url = None if end else "/console/audit?" + urlencode({**want, "after": cursor})
    return page(request, "audit.html", viewer, events=shown, want=want, after=after,
                next_url=next_url)


@router.get("/audit/verify")
async def verify(request: Request, viewer: SignedIn) -> HTMLResponse:
    """Verify the whole hash chain against its signed checkpoints."""
    access = await get_access(request)
    v = await run_in_threadpool(access.registry.verify_audit)
    return page(request, "verify.html", viewer, v=v)


# ---- agencies and principals ----------------------------------------------------------
async def _admin_page(request: Request, viewer: Viewer, *, status: int = 200,
                      message: str | None = None, shown_key: str | None = None,
                      shown_for: str | None = None) -> HTMLResponse:
    access = await get_access(request)
    agencies = await run_in_threadpool(access.list_agencies, viewer.principal)
    principals = await run_in_threadpool(access.list_principals, viewer.principal)
    return page(request, "admin.html", viewer, status=status, agencies=agencies,
                principals=principals, roles=ROLES, agency_roles=sorted(AGENCY_BOUND_ROLES),
                message=message, shown_key=shown_key, shown_for=shown_for,
                notice=request.query_params.get("notice"))


@router.get("/admin")
async def admin(request: Request, viewer: SignedIn) -> HTMLResponse:
    """Agencies and principals, with the forms that change them."""
    return await _admin_page(request, viewer)


@router.post("/admin/agencies")
async def create_agency(request: Request, viewer: SignedIn) -> Response:
    """Register an agency."""
    form = await request.form()
    access = await get_access(request)
    try:
        await run_in_threadpool(access.create_agency, viewer.principal, _text(form, "agency"))
    except MpiError as exc:
        code, text = failure(exc)
        return await _admin_page(request, viewer, status=code, message=text)
    return see_other("/console/admin?" + urlencode({"notice": "Agency registered."}))


@router.post("/admin/principals")
async def create_principal(request: Request, viewer: SignedIn) -> Response:
    """Create a principal; its key is shown once, on this response only."""
    form = await request.form()
    access = await get_access(request)
    try:
        row, key = await run_in_threadpool(
            access.create_principal, viewer.principal, _text(form, "name"),
            role=_text(form, "role"), agency=_text(form, "agency") or None,
            human_email=_text(form, "human_email") or None)
    except MpiError as exc:
        code, text = failure(exc)
        return await _admin_page(request, viewer, status=code, message=text)
    return await _admin_page(request, viewer, status=201, shown_key=key,
                             shown_for=f"{row['name']} ({row['principal_id']})")


@router.post("/admin/principals/{principal_id}/revoke")
async def revoke(request: Request, principal_id: str, viewer: SignedIn) -> Response:
    """Revoke a principal and its keys."""
    access = await get_access(request)
    try:
        await run_in_threadpool(access.revoke_principal, viewer.principal, principal_id)
    except MpiError as exc:
        code, text = failure(exc)
        return await _admin_page(request, viewer, status=code, message=text)
    return see_other("/console/admin?" + urlencode({"notice": f"{principal_id} revoked."}))


@router.post("/admin/principals/{principal_id}/rotate")
async def rotate(request: Request, principal_id: str, viewer: SignedIn) -> Response:
    """Issue a new key for a principal (shown once); the old one stops working at once."""
    access = await get_access(request)
    try:
        row, key = await run_in_threadpool(access.rotate_key, viewer.principal, principal_id)
    except MpiError as exc:
        code, text = failure(exc)
        return await _admin_page(request, viewer, status=code, message=text)
    return await _admin_page(request, viewer, shown_key=key,
                             shown_for=f"{row['name']} ({row['principal_id']})")
