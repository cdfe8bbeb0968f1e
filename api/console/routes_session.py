"""Console sign-in, sign-out and the home page.

Owns: ``GET/POST /console/login`` (an API key in, a server-side session out; the form is
protected by a double-submit token in its own cookie), ``POST /console/logout`` and
``GET /console`` (what each role can do here). Wrong keys count against the client address
and are audited exactly as on the API (``auth`` events); a sign-in and a sign-out are audited
as ``console.login`` / ``console.logout`` with the human's principal. Must not: show, log or
store the key anywhere but the server-side session.
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from api.state import app_state, get_access

from .guard import SignedIn, sessions
from .render import page, see_other
from .session import LOGIN_COOKIE, SESSION_COOKIE, cookie_attributes, same_secret

router = APIRouter(prefix="/console", include_in_schema=False)


def login_page(request: Request, *, status: int = 200, message: str | None = None) -> HTMLResponse:
    """The sign-in form with a fresh double-submit token (also set as a cookie)."""
    token = secrets.token_urlsafe(32)
    response = page(request, "login.html", None, status=status, message=message, login_token=token)
    response.set_cookie(LOGIN_COOKIE, token, **cookie_attributes())  # type: ignore[arg-type]
    return response


@router.get("/login")
async def login_form(request: Request) -> HTMLResponse:
    """The sign-in page."""
    return login_page(request)


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the sign-in form's token and the key; open a session and go home."""
    form = await request.form()
    token, key = form.get("login_token"), form.get("api_key")
    if not same_secret(token if isinstance(token, str) else None,
                       request.cookies.get(LOGIN_COOKIE)):
        return login_page(request, status=403, message="The sign-in form expired or was not sent "
                          "from this console: try again.")
    key = key.strip() if isinstance(key, str) else ""
    if not key:
        return login_page(request, status=422, message="Enter your API key.")
    access = await get_access(request)
    failures = app_state(request).auth_failures
    address = request.client.host if request.client else "unknown"
    if failures.blocked(address) > 0:
        return login_page(request, status=429, message="Too many wrong keys from this address; "
                          "wait a minute and try again.")
    principal = await run_in_threadpool(access.principals.authenticate, key)
    if principal is None:
        if failures.fail(address):  # bounded: one audit event per address per window
            await run_in_threadpool(access.audit, "unauthenticated", "auth",
                                    "route:POST /console/login", outcome="denied",
                                    detail={"reason": "unknown or revoked key", "client": address})
        return login_page(request, status=401, message="Unknown or revoked API key.")
    session = sessions(request).open(principal.principal_id, key)
    await run_in_threadpool(access.audit, principal.principal_id, "console.login", "console",
                            detail={"role": principal.role})
    response = see_other("/console")
    response.set_cookie(SESSION_COOKIE, session.session_id, **cookie_attributes())  # type: ignore[arg-type]
    response.delete_cookie(LOGIN_COOKIE, **cookie_attributes())  # type: ignore[arg-type]
    return response


@router.post("/logout")
async def logout(request: Request, viewer: SignedIn) -> Response:
    """End the session and return to the sign-in page."""
    access = await get_access(request)
    if viewer.session is not None:
        sessions(request).close(viewer.session.session_id)
    await run_in_threadpool(access.audit, viewer.principal.principal_id, "console.logout",
                            "console")
    response = see_other("/console/login")
    response.delete_cookie(SESSION_COOKIE, **cookie_attributes())  # type: ignore[arg-type]
    return response


@router.get("")
async def home(request: Request, viewer: SignedIn) -> HTMLResponse:
    """The signed-in home page: the viewer's role and pages."""
    return page(request, "home.html", viewer)
