"""The steward's keys export on the console: start a background export, follow it, download it.

Owns: the keys export page, the form that starts a ``keys_export`` job (the same
``StewardDesk.export_keys`` as ``POST /v1/keys/export``) and the download of a finished
export's CSV over the console session (``StewardDesk.job_result_file``: only the principal that
started the job gets the file, anyone else the same 404). Must not: run SQL, read the file
for anyone else, or show a token.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, Response

from api.state import get_desk
from mpi.errors import MpiError

from .guard import SignedIn
from .render import HEADERS, failure, page, see_other

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/keys")
async def keys(request: Request, viewer: SignedIn) -> HTMLResponse:
    """What a keys export writes, and the form that starts one."""
    return page(request, "keys.html", viewer)


@router.post("/keys/export")
async def export(request: Request, viewer: SignedIn) -> Response:
    """Start a keys export job; go to its progress page."""
    desk = await get_desk(request)
    try:
        job_id = await run_in_threadpool(desk.export_keys, viewer.principal)
    except MpiError as exc:
        code, text = failure(exc)
        return page(request, "keys.html", viewer, status=code, message=text)
    return see_other(f"/console/jobs/{job_id}")


@router.get("/jobs/{job_id}/result")
async def result(request: Request, job_id: str, viewer: SignedIn) -> Response:
    """The CSV of a completed keys export, for the principal that started it (404 otherwise)."""
    desk = await get_desk(request)
    try:
        path = await run_in_threadpool(desk.job_result_file, viewer.principal, job_id)
    except MpiError as exc:
        code, text = failure(exc)
        return page(request, "error.html", viewer, status=code, message=text)
    return FileResponse(path, media_type="text/csv", filename=f"keys-{job_id}.csv",
                        headers=dict(HEADERS))
