"""FastAPI app factory: wiring of routers, errors, limits, metrics and the registry's lifetime.

Owns: ``create_app(settings, *, registry=None)``. With a registry passed in, the app serves it
(and leaves closing it to the caller); otherwise the lifespan opens the registry for
``settings`` and closes it at shutdown. A fresh data directory gets its first admin key in
``<data_dir>/admin.key`` (0600). Must not: hold route logic (api/routes) or build settings
at import time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.routing import BaseRoute

from api import console
from api import errors as api_errors
from api.auth import document_security
from api.metrics import Metrics
from api.middleware import ServiceMiddleware
from api.policy import POLICY, PUBLIC, route_key
from api.ratelimit import RateLimiter
from api.routes import admin, audit, datasets, extracts, jobs, models, ops, persons, records, reports
from api.routes import consent as consent_routes
from api.routes import lineage as lineage_routes
from api.routes import review as review_routes
from api.routes import stewardjobs as stewardjob_routes
from api.routes import verifications as verification_routes
from api.state import AppState
from mpi.access import Access
from mpi.config import Settings
from mpi.extract.workflow import ExtractWorkflow
from mpi.identity.registry import Registry
from mpi.jobs import JobRunner
from mpi.principals import bootstrap_admin
from mpi.steward.desk import StewardDesk

log = logging.getLogger("mpi.api")
DESCRIPTION = """Privacy-preserving master person index (token-only linkage).

Authenticate with `Authorization: Bearer <API key>` (or `X-API-Key`). Every error is
RFC 9457 `application/problem+json` with a stable `code`; see each operation's responses."""


def flat_routes(routes: Sequence[BaseRoute]) -> list[Any]:
    """Every route, with included routers expanded (FastAPI >= 0.16x includes them lazily)."""
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    return list(iterate(routes)) if iterate is not None else list(routes)


def route_keys(routes: Sequence[BaseRoute]) -> list[str]:
    """The policy key of every method of every route (HEAD folded into GET)."""
    out = []
    for route in flat_routes(routes):
        path = getattr(route, "path", None)
        for method in sorted(getattr(route, "methods", None) or ()):
            if path is not None and method != "HEAD":
                out.append(route_key(method, path))
    return out


def _open(state: AppState, registry: Registry) -> None:
    state.registry = registry
    state.access = Access(registry, on_ingest=state.metrics.count_ingest)
    state.jobs = JobRunner(registry, uploads_dir=state.settings.data_dir / "uploads",
                           chunk=state.settings.bulk_chunk, on_counts=state.metrics.count_ingest)
    state.extracts = ExtractWorkflow(registry, data_dir=state.settings.data_dir)
    state.desk = StewardDesk(registry)
    path = bootstrap_admin(registry, data_dir=state.settings.data_dir)
    if path is not None:
        log.warning("first admin API key written to %s (mode 0600)", path)


DOCS_ASSETS = "/docs-assets"


def _local_docs(app: FastAPI) -> None:
    """Swagger UI at /docs from the files of the installed ``swagger-ui-bundle`` package (no
    CDN: the page loads nothing from outside the service). ReDoc is not served: it has no
    offline bundle among the dependencies."""
    import swagger_ui_bundle
    from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="mpi - Swagger UI",
                                   oauth2_redirect_url="/docs/oauth2-redirect",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png")

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def docs_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()


def create_app(settings: Settings | None = None, *, registry: Registry | None = None) -> FastAPI:
    """Build the app for ``settings`` (from the environment when omitted)."""
    settings = settings or (registry.settings if registry is not None else Settings())
    state = AppState(settings=settings, limiter=RateLimiter(settings.rate_limit_per_second,
                                                            burst=settings.rate_limit_burst),
                     metrics=Metrics(lambda: state.registry.stats() if state.registry else None))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        owned = state.registry is None
        if owned:
            _open(state, Registry(settings))
        try:
            yield
        finally:
            if state.registry is not None:  # the one runner of every background job
                state.registry.background.drain(timeout=120)
            if owned and state.registry is not None:
                state.registry.close()
                state.registry = state.access = state.jobs = state.extracts = state.desk = None

    app = FastAPI(title="mpi", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    _local_docs(app)
    app.state.mpi = state
    api_errors.install(app)
    for module in (records, persons, jobs, admin, audit, ops, reports, datasets, extracts, models,
                   review_routes, stewardjob_routes, consent_routes, verification_routes,
                   lineage_routes):
        app.include_router(module.router)
    console.install(app, settings)
    missing = [k for k in route_keys(app.routes) if k not in POLICY]
    if missing:
        raise RuntimeError(f"routes without a role policy entry: {missing}")
    app.add_middleware(ServiceMiddleware, metrics=state.metrics, max_body=settings.max_body_bytes,
                       max_bulk_body=settings.max_bulk_body_bytes)
    authenticated = {tuple(k.split(" ", 1)) for k, roles in POLICY.items() if roles != PUBLIC}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            api_errors.document_problems(schema, authenticated={(m, p) for m, p in authenticated})
            document_security(schema, authenticated={(m, p) for m, p in authenticated})
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    if registry is not None:
        _open(state, registry)
    return app
