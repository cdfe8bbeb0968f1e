"""Turning console pages into HTML responses: templates, navigation, headers, domain errors.

Owns: the Jinja2 environment of ``api/console/templates`` (autoescaped), ``page`` (one
template with the viewer, the navigation of the viewer's role and the CSRF token), the
console's response headers (no caching, a same-origin-only CSP, no framing), ``see_other``
(the redirect after a form) and ``failure`` (a domain error as a status and a message naming
the field or the conflict). Must not: call a domain service or hold page logic.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from api.errors import status_for
from mpi.errors import MpiError

from .guard import Viewer

log = logging.getLogger("mpi.api")
TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")


def when(value: Any) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM:SS`` (UTC, as stored); other values as text."""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return "" if value is None else str(value)


TEMPLATES.env.filters["when"] = when

NAV: dict[str, list[tuple[str, str]]] = {
    "steward": [("/console/review", "Review queue"), ("/console/persons", "Persons"),
                ("/console/constraints", "Constraints"), ("/console/models", "Models"),
                ("/console/reports/equity", "Equity report"), ("/console/keys", "Keys export"),
                ("/console/extracts", "Extracts")],
    "approver": [("/console/extracts", "Extract requests")],
    "researcher": [("/console/datasets", "Catalogue and request"),
                   ("/console/extracts", "My requests")],
    "auditor": [("/console/audit", "Audit log")],
    "admin": [("/console/admin", "Agencies and principals"),
              ("/console/reports/equity", "Equity report")],
    "agency": [("/console/verifications", "Verification tasks")],
}
"""Each role's console pages, in menu order."""

HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; form-action 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
"""Headers on every console response."""


def harden(response: Response) -> Response:
    """Add the console's headers to a response."""
    for name, value in HEADERS.items():
        response.headers[name] = value
    return response


def page(request: Request, template: str, viewer: Viewer | None, *, status: int = 200,
         **context: Any) -> HTMLResponse:
    """Render one console template for ``viewer`` (None on the sign-in page)."""
    role = viewer.principal.role if viewer else None
    ctx = {"viewer": viewer, "nav": NAV.get(role or "", []), "csrf": viewer.csrf if viewer else "",
           "path": request.url.path, **context}
    response = TEMPLATES.TemplateResponse(request, template, ctx, status_code=status)
    harden(response)
    return response


def see_other(url: str) -> Response:
    """A 303 redirect to ``url`` (after a form), with the console's headers."""
    return harden(RedirectResponse(url, status_code=303))


def failure(exc: MpiError) -> tuple[int, str]:
    """A domain error as (HTTP status, message for the page): the error's message and each
    located problem (field and reason), never a token or key; an internal error (500) says
    no more than the API does."""
    status = status_for(exc)
    if status >= 500:
        log.error("console: domain error %s (%s)", type(exc).__name__, exc.code)
        return 500, "The service could not complete the request."
    parts = [exc.message] + [p.describe() for p in exc.problems]
    return status, "; ".join(x for x in parts if x)
