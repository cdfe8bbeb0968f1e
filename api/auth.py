"""Authentication and role authorization for every non-public route.

Owns: reading ``Authorization: Bearer <key>`` (or ``X-API-Key``), authenticating it, the
per-principal rate limit, and checking the caller's role against ``api.policy.POLICY`` for the
matched route. 401 when the key is missing or wrong, 403 when the role is not allowed (audited
with the principal), 429 when over the rate limit. Must not: log or echo a key.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.policy import allowed
from api.state import app_state, get_access
from mpi.access import Access
from mpi.errors import Forbidden, RateLimited, Unauthorized
from mpi.principals import Principal

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API key>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key.")


def _check(request: Request, access: Access, key: str | None,
           principal: Principal | None) -> Principal:
    """Authenticate (when ``principal`` is not already known) and authorize; may touch the
    database (a key not yet cached, an audited refusal), so it runs on a worker thread."""
    if not key:
        raise Unauthorized("an API key is required (Authorization: Bearer <key> or X-API-Key)")
    if principal is None:
        principal = access.principals.authenticate(key)
    route_path = getattr(request.scope.get("route"), "path", request.url.path)
    if principal is None:
        holder = access.principals.find_revoked_holder(key)
        if holder is not None:
            access.audit(holder, "auth", f"route:{request.method} {route_path}", outcome="denied",
                         detail={"reason": "revoked key"})
        raise Unauthorized("unknown or revoked API key")
    wait = app_state(request).limiter.take(principal.principal_id)
    if wait > 0:
        raise RateLimited("rate limit exceeded for this principal", retry_after=wait)
    if principal.role not in allowed(request.method, route_path):
        access.audit(principal.principal_id, "auth", f"route:{request.method} {route_path}",
                     outcome="denied", detail={"role": principal.role})
        raise Forbidden(f"role {principal.role!r} may not call {request.method} {route_path}")
    return principal


async def current_principal(
    request: Request,
    access: Annotated[Access, Depends(get_access)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
) -> Principal:
    """The authenticated principal, allowed by the policy for this route.

    The common case (a key already cached, allowed, within its rate) is decided on the event
    loop without a database call or a thread hop; anything else runs ``_check`` on a worker."""
    key = bearer.credentials if bearer is not None else header
    principal = access.principals.cached(key) if key else None
    route_path = getattr(request.scope.get("route"), "path", None)
    if (principal is not None and isinstance(route_path, str)
            and principal.role in allowed(request.method, route_path)):
        wait = app_state(request).limiter.take(principal.principal_id)
        if wait > 0:
            raise RateLimited("rate limit exceeded for this principal", retry_after=wait)
        return principal
    return await run_in_threadpool(_check, request, access, key, principal)


Caller = Annotated[Principal, Depends(current_principal)]
