"""Routes of the model lifecycle: train, list, inspect, chart, evaluate, impact, promote."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query, Response

from api.auth import Caller
from api.errors import errors
from api.schemas.common import JobOut
from api.schemas.lifecycle import (
    EvaluationOut,
    ImpactOut,
    ModelListOut,
    ModelOut,
    PromoteOut,
    TrainIn,
)
from api.state import DeskDep, JobsDep
from mpi.linkage.catalog import VERSION_PATTERN
from mpi.steward import modelops

router = APIRouter(prefix="/v1/models", tags=["models"])
Version = Annotated[str, Path(pattern=VERSION_PATTERN, description="e.g. `candidate-v001`.")]
ChartName = Literal["match-weights", "m-u", "probability-histogram", "precision-recall",
                    "cluster-sizes"]


@router.post(
    "/train", response_model=JobOut, status_code=202, responses=errors(409),
    summary="Train a candidate model version in the background",
    description="Starts a `model_train` job over the registry's active records (a seeded "
    "`sample` of them): Splink's prior from deterministic rules, u by random sampling, then EM "
    "on the training blocking rules. Poll `GET /v1/jobs/{job_id}`: `done`/`total` steps, "
    "`message`, and `result.version` when completed. The version (Splink JSON + sidecar with "
    "the training-data fingerprint, label count, parameters and thresholds) is written to "
    "DATA_DIR/models and never activated. One training job at a time (else 409). Audited as "
    "`models.train`.")
def train(caller: Caller, desk: DeskDep, jobs: JobsDep,
          body: Annotated[TrainIn | None, Body()] = None) -> Any:
    """Start a training job."""
    opts = body or TrainIn()
    job_id = desk.train_model(
        caller, seed=opts.seed, sample=opts.sample, name=opts.name,
        link=opts.link, review=opts.review)
    return jobs.get_job(caller, job_id)


@router.get(
    "", response_model=ModelListOut, summary="List model versions",
    description="Every version shipped with mpi (or in `MPI_MODELS_DIR`) and trained in this "
    "registry (DATA_DIR/models), with `active` marking the one in use and when each was "
    "activated.")
def list_models(caller: Caller, desk: DeskDep) -> Any:
    """List versions."""
    return {"models": desk.list_models(caller)}


@router.get(
    "/{version}", response_model=ModelOut, responses=errors(404),
    summary="A model version's parameters, thresholds and metrics",
    description="m and u probability and match weight log2(m/u) of every comparison level "
    "(the null level has weight 0), the prior, thresholds as probabilities and weights, "
    "training provenance, the accuracy recorded at training and the latest evaluation.")
def read_model(version: Version, caller: Caller, desk: DeskDep) -> Any:
    """Read one version."""
    return desk.get_model(caller, version)


@router.get(
    "/{version}/charts/{chart}", responses={
        200: {"content": {"text/html": {}, "image/png": {}},
              "description": "The chart: self-contained HTML or PNG."}, **errors(404)},
    summary="A chart of a model version (offline HTML or PNG)",
    description="`match-weights` (per comparison level), `m-u` (m and u per level), "
    "`probability-histogram` (match probability of every candidate pair in the registry), "
    "`precision-recall` (labelled pairs against the threshold) and `cluster-sizes` (records "
    "per person after a re-link with the version). `format=html` inlines Vega's JavaScript, "
    "so it works offline; `format=png` is an image.")
def read_chart(version: Version, chart: Annotated[ChartName, Path()], caller: Caller,
               desk: DeskDep,
               format: Annotated[Literal["html", "png"], Query()] = "html") -> Response:  # noqa: A002
    """Render one chart."""
    body, media = desk.chart(caller, version, chart, format)
    return Response(content=body, media_type=media)


@router.post(
    "/{version}/evaluate", response_model=EvaluationOut, responses=errors(404),
    summary="Evaluate a version against the current labels",
    description="Precision, recall and F1 of the version's pair scores at its link threshold "
    "(and at its review threshold) over the active labelled pairs, plus unsupervised "
    "diagnostics of a re-link with the version (candidate pairs, pairs linked and in review, "
    "uncertain share, persons, singleton rate, largest person, review items). Stored (it shows "
    "in `GET /v1/models/{version}`) and audited as `models.evaluate`; no key changes.")
def evaluate(version: Version, caller: Caller, desk: DeskDep) -> Any:
    """Evaluate one version."""
    return desk.evaluate_model(caller, version)


@router.get(
    "/{version}/impact", response_model=ImpactOut, responses=errors(404, 409),
    summary="Preview what promoting a version would change",
    description="Re-links the whole registry with the version in memory and reconciles the "
    "result with the current keys without writing anything: records that would change key, "
    "persons that would merge or split, new keys; the same for the active version (drift); "
    "candidate pairs whose decision changes; review items (record pairs in the review band "
    "in different persons) that would appear or clear; and a `sample` of changed pairs with "
    "each version's match-weight breakdown. Constraints apply as in a promotion. No token or "
    "person key in the output. Audited as `models.impact`. 409 when records were enrolled or "
    "withdrawn while it computed (run it again).")
def impact(version: Version, caller: Caller, desk: DeskDep,
           sample: Annotated[int, Query(ge=0, le=modelops.MAX_SAMPLE)] = 20) -> Any:
    """Preview one version's impact."""
    return desk.model_impact(caller, version,
                                 sample=sample)


@router.post(
    "/{version}/promote", response_model=PromoteOut, responses=errors(404),
    summary="Activate a version (re-link with key carry-over)",
    description="Re-links the registry with the version and reconciles keys (keys follow the "
    "majority of their records), writing the key events, the activation and the audit event "
    "`models.promote` (with the churn) in one transaction; online matching uses the version "
    "from then on. A version with the active one's parameters and thresholds is activated "
    "without a re-link (zero keys change). Returns the churn.")
def promote(version: Version, caller: Caller, desk: DeskDep) -> Any:
    """Promote one version."""
    return desk.promote_model(caller, version)
