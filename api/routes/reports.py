"""Steward reports: linkage quality per group of a record attribute (the equity report)."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.auth import Caller
from api.errors import errors
from api.schemas.common import LinkageQualityOut
from api.state import DeskDep

router = APIRouter(prefix="/v1/reports", tags=["reports"])


@router.get(
    "/linkage-quality", response_model=LinkageQualityOut,
    summary="Linkage quality by group (equity report)",
    description="Per value of the record attribute `by` (agencies send it in `attributes`, e.g. "
    "`race_ethnicity`, `sex`, `birth_year`; records without it form the group `(missing)`), "
    "over active records: record count, share linked across agencies, share in review, "
    "singleton rate and mean match probability of links. Label-based precision and recall "
    "are null until labels exist. A group is `flagged` when a two-proportion z-test against "
    "all other records (cross-agency link share, singleton rate; design effect for records "
    "of one person) gives p below the Bonferroni-corrected 0.01. Groups with fewer records "
    "than `MPI_DISCLOSURE_THRESHOLD` (default 11) are suppressed. An invalid attribute name "
    "is a 422, and so is an attribute no active record carries (naming `by`). Audited as "
    "`reports.linkage_quality` on `attribute:<name>`.", responses=errors(422))
def linkage_quality(
    caller: Caller, desk: DeskDep,
    by: Annotated[str, Query(min_length=1, max_length=64, description="Attribute name.")],
) -> Any:
    """The equity report by one attribute."""
    report = desk.linkage_quality(caller, attribute=by)
    return dataclasses.asdict(report)
