"""The web console under ``/console``: server-rendered pages for each role over the same
domain services, principals and role table as the JSON API (decisions 0081-0083).

Owns: ``install(app, settings)``: the console's routers, its static files (``/console/static``,
local CSS only), its session store and the handler that turns a refused console request into a
page. Must not: hold page logic (the ``routes_*`` modules) or run SQL.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from mpi.config import Settings

from . import routes_keys, routes_office, routes_session, routes_steward
from .guard import ConsoleRefusal
from .render import page
from .session import SessionStore

STATIC = Path(__file__).parent / "static"


def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConsoleRefusal)
    if exc.login:
        return routes_session.login_page(request, status=exc.status, message=exc.message)
    return page(request, "error.html", None, status=exc.status, message=exc.message)


def install(app: FastAPI, settings: Settings) -> None:
    """Add the console to ``app``: routes, static files, sessions, the refusal page."""
    app.state.console_sessions = SessionStore(settings.console_idle_minutes * 60)
    for module in (routes_session, routes_steward, routes_keys, routes_office):
        app.include_router(module.router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
    app.add_exception_handler(ConsoleRefusal, _refused)
