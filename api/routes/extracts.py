"""Routes for research extracts: request, approve, build, download, close; the accounting of
disclosures, the turnaround report and the public signing key."""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from api.auth import Caller
from api.errors import errors
from api.schemas.extract import (
    ApprovalIn,
    DisclosuresOut,
    ExtractIn,
    ExtractOut,
    ExtractsOut,
    RequestReportOut,
    SigningKeyOut,
)
from api.state import ExtractsDep

router = APIRouter(tags=["extracts"])
ExtractId = Annotated[str, Path(min_length=1, max_length=64)]


@router.post(
    "/v1/extracts", response_model=ExtractOut, status_code=201,
    summary="Request a research extract",
    description="Title, purpose, agreement reference, the attributes wanted (each from an "
    "agency's data dictionary, optionally with one of its allowed generalizations), a cohort "
    "(persons with an active record at an agency, optionally with a date attribute in a range), "
    "rows or an aggregate (with dimensions), k, date shifting, expiry and download limit. "
    "The request then needs an approver of every contributing agency (the attributes' "
    "agencies and the cohort's) and a steward. A 422 names each field and reason.",
    responses=errors(422))
def create_extract(body: ExtractIn, caller: Caller, extracts: ExtractsDep) -> Any:
    """Request an extract."""
    return extracts.create_request(caller, body.model_dump())


@router.get(
    "/v1/extracts", response_model=ExtractsOut, summary="Extract requests the caller may see",
    description="Researchers see their own requests, approvers those involving their agency, "
    "stewards all.")
def list_extracts(caller: Caller, extracts: ExtractsDep) -> Any:
    """List visible requests."""
    return extracts.list_requests(caller)


@router.get(
    "/v1/extracts/{extract_id}", response_model=ExtractOut, summary="One extract request",
    description="Its status, approvals, the approvals still pending, build state and latest "
    "build (row count, manifest SHA-256), and `recall`: delivered builds that include persons "
    "who have opted out since (counts only; the recipient destroys them) and whether a rebuild "
    "is required before the next download (Decision 79). 404 when the caller may not see it.",
    responses=errors(404))
def read_extract(extract_id: ExtractId, caller: Caller, extracts: ExtractsDep) -> Any:
    """Read one request."""
    return extracts.get_request(caller, extract_id)


@router.post(
    "/v1/extracts/{extract_id}/approvals", response_model=ExtractOut,
    summary="Approve or deny a request",
    description="An approver decides for its own agency (a contributing one), a steward for "
    "the disclosure settings. Any denial ends the request. Nobody decides on their own request, "
    "nor a principal with the requester's name or human (`human_email`), and one human acts in "
    "one capacity per request: an approver principal without a `human_email` cannot decide "
    "(403, Decision 80). A capacity decides "
    "once (409 again); decisions on a request that is no longer pending or has expired are "
    "409. The last approval starts the build in the background. Audited, refusals too.",
    responses=errors(403, 404, 409))
def decide(extract_id: ExtractId, body: ApprovalIn, caller: Caller, extracts: ExtractsDep) -> Any:
    """Record a decision."""
    return extracts.decide(caller, extract_id, decision=body.decision, reason=body.reason)


@router.post(
    "/v1/extracts/{extract_id}/build", response_model=ExtractOut, status_code=202,
    summary="Rebuild an approved extract",
    description="Starts a background build (`build_state` queued -> running -> built or failed) "
    "with the project's own secret, so the pseudonyms equal the previous build's. Only the "
    "requester or a steward; 409 when not approved, closed, expired or already building.",
    responses=errors(403, 404, 409))
def build(extract_id: ExtractId, caller: Caller, extracts: ExtractsDep) -> Any:
    """Start a build."""
    return extracts.request_build(caller, extract_id)


@router.get(
    "/v1/extracts/{extract_id}/download", response_class=StreamingResponse,
    summary="Download the signed extract package",
    description="The zip (Parquet and CSV data, dictionary, disclosure and linkage-quality "
    "reports, manifest signed with the key of `GET /v1/keys/signing`). Only the requesting "
    "researcher (403 otherwise), only when approved, built and not expired, and within the "
    "download limit (409 otherwise); 409 too when a released attribute has lost its dictionary "
    "entry, and 409 `rebuild_required` when a person in the build has opted out since it was "
    "built (by a record or a person-level opt-out) until it is rebuilt. Every download "
    "and every refusal is audited.",
    responses={200: {"content": {"application/zip": {}}}, **errors(403, 404, 409)})
def download(extract_id: ExtractId, caller: Caller, extracts: ExtractsDep) -> StreamingResponse:
    """Download the package."""
    package, filename = extracts.download(caller, extract_id)
    size = os.fstat(package.fileno()).st_size
    return StreamingResponse(
        iter(lambda: package.read(1 << 20), b""), media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"',
                 "Content-Length": str(size)},
        background=BackgroundTask(package.close))


@router.post(
    "/v1/extracts/{extract_id}/close", response_model=ExtractOut,
    summary="Close a project: destroy its pseudonym secret",
    description="The project secret is overwritten and deleted and the stored packages removed; "
    "the pseudonyms can never be reproduced, and later builds and downloads are refused (409). "
    "The requester or a steward.", responses=errors(403, 404, 409))
def close(extract_id: ExtractId, caller: Caller, extracts: ExtractsDep) -> Any:
    """Close an extract."""
    return extracts.close(caller, extract_id)


@router.get(
    "/v1/persons/{person_key}/disclosures", response_model=DisclosuresOut,
    summary="Accounting of disclosures for a person",
    description="Every extract delivered (downloaded) with the person in it: project, purpose, "
    "agreement, recipient, date of first delivery, attributes released. Found through retired "
    "keys too (merges and splits forward). A steward, or an agency with a record linked to "
    "the person (otherwise the same 404 as an unknown key; a scoped agency names the person "
    "by its own key, Decision 72). Audited.", responses=errors(404))
def disclosures(person_key: Annotated[str, Path(min_length=1, max_length=64)], caller: Caller,
                extracts: ExtractsDep) -> Any:
    """List disclosures of one person."""
    return extracts.disclosures(caller, person_key)


@router.get(
    "/v1/reports/requests", response_model=RequestReportOut,
    summary="Extract request turnaround",
    description="Median and 90th-percentile hours from request to decision (final approval or "
    "first denial) and from approval to delivery (first download), with counts by status.")
def request_report(caller: Caller, extracts: ExtractsDep) -> Any:
    """The turnaround report."""
    return extracts.request_report(caller)


@router.get(
    "/v1/keys/signing", response_model=SigningKeyOut, summary="The extract signing public key",
    description="PEM and SHA-256 fingerprint of the Ed25519 key that signs every extract "
    "manifest; check a package offline with `mpi extract verify PACKAGE --public-key FILE`.")
def signing_key(extracts: ExtractsDep) -> Any:
    """The public signing key."""
    return extracts.public_signing_key()
