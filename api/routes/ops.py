"""Public operational routes: liveness, readiness, metrics and the linkage schema."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

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


@router.get("/metrics", summary="Prometheus metrics", tags=["ops"], response_class=Response,
            description="Request latency histograms per route template, ingest counts by outcome "
            "and registry size gauges (aggregates only: no ids, tokens or keys).",
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition format."}})
def metrics(request: Request) -> Response:
    """The metrics in Prometheus text format."""
    return Response(app_state(request).metrics.render(), media_type=CONTENT_TYPE)


@router.get("/v1/schema", response_model=dict[str, Any], tags=["schema"],
            summary="The linkage schema (token contract)",
            description="Agencies check their tokenizer's schema version against this. Tokens "
            "made under an unknown schema version or linkage key id are refused with 422.")
async def get_schema() -> Any:
    """The linkage schema."""
    return schema_document()
