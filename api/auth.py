"""Authentication and role authorization for every non-public route.

Owns: reading ``Authorization: Bearer <key>`` (or ``X-API-Key``) and declaring both in
OpenAPI, authenticating the key, the
per-principal rate limit, and checking the caller's role against ``api.policy.POLICY`` for the
matched route. 401 when the key is missing or wrong, 403 when the role is not allowed (audited
with the principal), 429 when over the rate limit or after too many wrong keys from one client
address (the first wrong key of each window is audited with the address). Must not: log or
echo a key.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from api.policy import allowed
from api.state import app_state, get_access
from mpi.access import Access
from mpi.errors import Forbidden, RateLimited, Unauthorized
from mpi.principals import Principal

SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "HTTPBearer": {"type": "http", "description": "`Authorization: Bearer <API key>`",
                   "scheme": "bearer"},
    "APIKeyHeader": {"type": "apiKey", "description": "The API key.", "in": "header",
                     "name": "X-API-Key"},
}
"""How keys are presented, for OpenAPI (read by ``presented_key``; FastAPI's security
dependencies would cost a dependency resolution each on every request)."""


def presented_key(request: Request) -> str | None:
    """The API key in ``Authorization: Bearer`` (preferred) or ``X-API-Key``, if any."""
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, credentials = auth.partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer" and credentials:
            return credentials
    return request.headers.get("x-api-key")


def document_security(schema: dict[str, Any], *, authenticated: set[tuple[str, str]]) -> None:
    """Declare the key schemes in an OpenAPI document and require one on each authenticated
    operation."""
    schema.setdefault("components", {})["securitySchemes"] = dict(SECURITY_SCHEMES)
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            if (method.upper(), path) in authenticated:
                op["security"] = [{name: []} for name in SECURITY_SCHEMES]


_REVOKED = "revoked-key:"  # rate-limit bucket prefix for auditing a revoked key's use
_UNAUTHENTICATED = "unauthenticated"  # the audit actor of a wrong key


def _take_rate(request: Request, principal: Principal) -> None:
    """Take one request from the principal's rate budget; 429 when it is spent."""
    wait = app_state(request).limiter.take(principal.principal_id)
    if wait > 0:
        raise RateLimited("rate limit exceeded for this principal", retry_after=wait)


def _authenticate(request: Request, access: Access, key: str, route_path: str) -> Principal:
    """The key's principal. A wrong key is 401 and counts against the client address (the first
    of each window is audited with the address); once the address has sent too many in its
    window, 429 before the key is even looked up."""
    failures = app_state(request).auth_failures
    address = request.client.host if request.client else "unknown"
    wait = failures.blocked(address)
    if wait > 0:
        raise RateLimited("too many wrong API keys from this address", retry_after=wait)
    principal = access.principals.authenticate(key)
    if principal is not None:
        return principal
    target = f"route:{request.method} {route_path}"
    if failures.fail(address):  # bounded: one audit event per address per window
        access.audit(_UNAUTHENTICATED, "auth", target, outcome="denied",
                     detail={"reason": "unknown or revoked key", "client": address})
    holder = access.principals.find_revoked_holder(key)
    # A revoked key's use is audited within a rate budget of its own (not the holder's:
    # a leaked old key must not throttle the principal's current one), so hammering the
    # service with it cannot turn into an unbounded stream of durable audit writes.
    if holder is not None and app_state(request).limiter.take(_REVOKED + holder) == 0:
        access.audit(holder, "auth", target, outcome="denied", detail={"reason": "revoked key"})
    raise Unauthorized("unknown or revoked API key")


def _check(request: Request, access: Access, key: str | None,
           principal: Principal | None) -> Principal:
    """Authenticate (when ``principal`` is not already known) and authorize; may touch the
    database (a key not yet cached, an audited refusal), so it runs on a worker thread."""
    if not key:
        raise Unauthorized("an API key is required (Authorization: Bearer <key> or X-API-Key)")
    route_path = getattr(request.scope.get("route"), "path", request.url.path)
    if principal is None:
        principal = _authenticate(request, access, key, route_path)
    _take_rate(request, principal)
    if principal.role not in allowed(request.method, route_path):
        access.audit(principal.principal_id, "auth", f"route:{request.method} {route_path}",
                     outcome="denied", detail={"role": principal.role})
        raise Forbidden(f"role {principal.role!r} may not call {request.method} {route_path}")
    return principal


async def current_principal(request: Request) -> Principal:
    """The authenticated principal, allowed by the policy for this route.

    The common case (a key already cached, allowed, within its rate) is decided on the event
    loop without a database call or a thread hop; anything else runs ``_check`` on a worker."""
    access = await get_access(request)
    key = presented_key(request)
    principal = access.principals.cached(key) if key else None
    route_path = getattr(request.scope.get("route"), "path", None)
    if (principal is not None and isinstance(route_path, str)
            and principal.role in allowed(request.method, route_path)):
        _take_rate(request, principal)
        return principal
    return await run_in_threadpool(_check, request, access, key, principal)


Caller = Annotated[Principal, Depends(current_principal)]
