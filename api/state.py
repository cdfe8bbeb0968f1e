"""What a running app holds: settings, the open registry and the services built on it.

Owns: the ``AppState`` object on ``app.state.mpi`` and the dependencies that fetch its parts.
Must not: open or close anything (api/main.py's lifespan does), or block: the dependencies are
``async`` so that FastAPI runs them on the event loop instead of handing each to a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, TypeVar

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

T = TypeVar("T")


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


def _open(part: T | None) -> T:
    """A part of the open registry's services; 503 (NotReady) while the registry is not open."""
    if part is None:
        raise NotReady
    return part


async def get_access(request: Request) -> Access:
    """The record and person use cases; 503 when the registry is not open."""
    return _open(app_state(request).access)


async def get_jobs(request: Request) -> JobRunner:
    """The bulk job runner; 503 when the registry is not open."""
    return _open(app_state(request).jobs)


async def get_extracts(request: Request) -> ExtractWorkflow:
    """The research-extract workflow; 503 when the registry is not open."""
    return _open(app_state(request).extracts)


async def get_desk(request: Request) -> StewardDesk:
    """The steward use cases; 503 when the registry is not open."""
    return _open(app_state(request).desk)


AccessDep = Annotated[Access, Depends(get_access)]
"""Route parameter: the record and person use cases."""
JobsDep = Annotated[JobRunner, Depends(get_jobs)]
"""Route parameter: the bulk job runner."""
ExtractsDep = Annotated[ExtractWorkflow, Depends(get_extracts)]
"""Route parameter: the research-extract workflow."""
DeskDep = Annotated[StewardDesk, Depends(get_desk)]
"""Route parameter: the steward use cases."""
