"""Operational routes: liveness, readiness, metrics and the linkage schema (public), and the
registry-size metrics (an authenticated operator only, Decision 93)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from api.auth import Caller
from api.errors import NotReady, errors
from api.metrics import CONTENT_TYPE
from api.schemas.common import HealthOut, ReadyOut
from api.state import app_state
from mpi.agency.schema import schema_document

router = APIRouter()


@router.get("/healthz", response_model=HealthOut, summary="Liveness", tags=["ops"],
            description="The process is up.")
async def healthz() -> Any:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyOut, summary="Readiness", tags=["ops"],
            description="The registry is open and serving.", responses=errors(503))
async def readyz(request: Request) -> Any:
    """The registry is open."""
    reg = app_state(request).registry
    if reg is None:
        raise NotReady
    return {"status": "ready", "model_version": reg.model.version}


_EXPOSITION: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {"schema": {"type": "string"}}},
          "description": "Prometheus text exposition format."}}


@router.get("/metrics", summary="Prometheus metrics", tags=["ops"], response_class=Response,
            description="Operational figures only: request latency histograms per route "
            "template and ingest counts by outcome (as each agency was told them). Registry "
            "size (records, persons, open review items) moves when a scoped agency's record "
            "joins another agency's person, so it is at `GET /metrics/registry`, for an "
            "authenticated operator (Decision 93).", responses=_EXPOSITION)
def metrics(request: Request) -> Response:
    """The public metrics in Prometheus text format."""
    return Response(app_state(request).metrics.render(), media_type=CONTENT_TYPE)


@router.get("/metrics/registry", summary="Registry-size metrics", tags=["ops"],
            response_class=Response, responses=_EXPOSITION,
            description="Prometheus gauges `mpi_registry_records` (by status), "
            "`mpi_registry_persons` (by status) and `mpi_registry_review_open` (by kind), read "
            "at scrape time. Admin, steward or auditor only: these counts tell whether an "
            "enrolment joined an existing person. Not audited (a scraper reads it every few "
            "seconds); the answer is never cached (`Cache-Control: no-store`).")
def registry_metrics(request: Request, caller: Caller) -> Response:
    """The registry-size gauges in Prometheus text format."""
    return Response(app_state(request).metrics.render_size(), media_type=CONTENT_TYPE,
                    headers={"Cache-Control": "no-store"})


@router.get("/v1/schema", response_model=dict[str, Any], tags=["schema"],
            summary="The linkage schema (token contract)",
            description="Agencies check their tokenizer's schema version against this. Tokens "
            "made under an unknown schema version or linkage key id are refused with 422.")
async def get_schema() -> Any:
    """The linkage schema."""
    return schema_document()
