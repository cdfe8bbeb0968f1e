"""Who is looking at a console page, and whether they may: session, role and CSRF checks.

Owns: ``console_viewer``, the dependency of every signed-in console route. A request that
carries an API key header is authenticated exactly as an API call (``api.auth``; no cookie, so
no CSRF risk and no CSRF check). Otherwise the session cookie names a server-side session
whose key is re-authenticated on every request; its role is checked against
``api.policy.POLICY`` for the matched route (a refusal is audited as on the API); every POST
must carry the session's CSRF token. ``ConsoleRefusal`` is what these checks raise; the
console's handler turns it into a page. Must not: log or show a key, a session id or a token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from api.auth import current_principal, presented_key
from api.policy import allowed
from api.state import app_state, get_access
from mpi.principals import Principal

from .session import SESSION_COOKIE, Session, SessionStore, same_secret


class ConsoleRefusal(Exception):
    """A console request refused: HTTP status and a message for the human."""

    def __init__(self, status: int, message: str, *, login: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.login = login


@dataclass(frozen=True)
class Viewer:
    """The principal behind a console request, and its session (None with an API key header)."""

    principal: Principal
    session: Session | None

    @property
    def csrf(self) -> str:
        """The CSRF token forms must carry (empty for key-header callers, who need none)."""
        return self.session.csrf if self.session is not None else ""


def sessions(request: Request) -> SessionStore:
    """The app's console session store."""
    store: SessionStore = request.app.state.console_sessions
    return store


def _route(request: Request) -> str:
    return str(getattr(request.scope.get("route"), "path", request.url.path))


async def console_viewer(request: Request) -> Viewer:
    """The signed-in viewer allowed on this route; ``ConsoleRefusal`` (401/403/429) otherwise."""
    if presented_key(request):
        return Viewer(await current_principal(request), None)
    access = await get_access(request)
    store = sessions(request)
    session = store.get(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise ConsoleRefusal(401, "Sign in to continue (no session, or it was idle too long).",
                             login=True)
    principal = access.principals.cached(session.key)
    if principal is None:
        principal = await run_in_threadpool(access.principals.authenticate, session.key)
    if principal is None:
        store.close(session.session_id)
        raise ConsoleRefusal(401, "Your key was revoked or rotated: sign in again.", login=True)
    target = f"route:{request.method} {_route(request)}"
    if principal.role not in allowed(request.method, _route(request)):
        await run_in_threadpool(access.audit, principal.principal_id, "auth", target,
                                outcome="denied", detail={"role": principal.role})
        raise ConsoleRefusal(403, f"Your role ({principal.role}) may not use this page.")
    if app_state(request).limiter.take(principal.principal_id) > 0:
        raise ConsoleRefusal(429, "Too many requests; wait a moment and try again.")
    if request.method == "POST":
        form = await request.form()
        token = form.get("csrf")
        if not same_secret(token if isinstance(token, str) else None, session.csrf):
            await run_in_threadpool(access.audit, principal.principal_id, "auth", target,
                                    outcome="denied", detail={"reason": "csrf token"})
            raise ConsoleRefusal(403, "This form's security token is missing or wrong: reload "
                                      "the page and submit it again.")
    return Viewer(principal, session)


SignedIn = Annotated[Viewer, Depends(console_viewer)]
"""Route parameter: the signed-in, authorized console viewer."""
