"""What a running app holds: settings, the open registry and the services built on it.

Owns: the ``AppState`` object on ``app.state.mpi`` and the dependencies that fetch its parts.
Must not: open or close anything (api/main.py's lifespan does), or block: the dependencies are
``async`` so that FastAPI runs them on the event loop instead of handing each to a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from api.errors import NotReady
from api.metrics import Metrics
from api.ratelimit import FailureLimiter, RateLimiter
from mpi.access import Access
from mpi.config import Settings
from mpi.extract.workflow import ExtractWorkflow
from mpi.identity.registry import Registry
from mpi.jobs import JobRunner
from mpi.steward.desk import StewardDesk


@dataclass
class AppState:
    """One app's settings, registry and services (registry parts are None until opened)."""

    settings: Settings
    metrics: Metrics
    limiter: RateLimiter
    auth_failures: FailureLimiter = field(default_factory=FailureLimiter)
    registry: Registry | None = None
    access: Access | None = None
    jobs: JobRunner | None = None
    extracts: ExtractWorkflow | None = None
    desk: StewardDesk | None = None


def app_state(request: Request) -> AppState:
    """The app's state."""
    state: AppState = request.app.state.mpi
    return state


async def get_access(request: Request) -> Access:
    """The use cases over the open registry; 503 when it is not open."""
    access = app_state(request).access
    if access is None:
        raise NotReady
    return access


async def get_jobs(request: Request) -> JobRunner:
    """The bulk job runner; 503 when the registry is not open."""
    jobs = app_state(request).jobs
    if jobs is None:
        raise NotReady
    return jobs


async def get_extracts(request: Request) -> ExtractWorkflow:
    """The research-extract workflow; 503 when the registry is not open."""
    extracts = app_state(request).extracts
    if extracts is None:
        raise NotReady
    return extracts


AccessDep = Annotated[Access, Depends(get_access)]
"""Route parameter: the registry's use cases."""
JobsDep = Annotated[JobRunner, Depends(get_jobs)]
"""Route parameter: the bulk job runner."""
ExtractsDep = Annotated[ExtractWorkflow, Depends(get_extracts)]


async def get_desk(request: Request) -> StewardDesk:
    """The steward use cases; 503 when the registry is not open."""
    desk = app_state(request).desk
    if desk is None:
        raise NotReady
    return desk


DeskDep = Annotated[StewardDesk, Depends(get_desk)]
"""Route parameter: the research-extract workflow."""
