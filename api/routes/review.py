"""Steward routes: the review queue, label import, constraints, and person merge/split."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query

from api.auth import Caller
from api.errors import errors
from api.schemas.review import (
    ConstraintOut,
    ConstraintsPageOut,
    DecisionIn,
    DecisionOut,
    LabelsIn,
    LabelsOut,
    MergeIn,
    RegroupOut,
    ReviewItemOut,
    ReviewPageOut,
    RevokeIn,
    SplitIn,
)
from api.schemas.verification import ReopenIn
from api.state import DeskDep
from mpi.steward import labels

router = APIRouter(tags=["stewardship"])
ItemId = Annotated[int, Path(ge=1, le=2**62)]
PersonKey = Annotated[str, Path(min_length=1, max_length=64)]


@router.get(
    "/v1/review", response_model=ReviewPageOut, summary="List review items",
    description="Items in the review band, oldest first: `record_person` (a record that scored "
    "in the review band against a person and got its own key) and "
    "`possible_duplicate` (two persons a record scored above "
    "the link threshold for). Filters: `kind`, `status` (`open` by default; `deferred`, `decided`, "
    "`resolved` (settled by a re-link, a merge or a split: the record joined the person, or a person it "
    "names was retired; "
    "still decidable), `all`), `agency` (items involving a record of that agency), "
    "`min_probability`/`max_probability` (on the current probability: items are rescored with the "
    "active model after every promote and re-link, and those below its review threshold are "
    "resolved with `decision_reason` `below_threshold_after_rescore`). `sort`: `id` (default), "
    "`probability_desc` or `probability_asc` (current probability; then `after`/`next_after` "
    "count items to skip). Each item shows its two sides as they are now (a retired key "
    "is followed to its successors), the agencies involved, and the best-scoring record pair across the"
    " sides explained per identifier field (agreement level and match weight: a waterfall from the "
    "prior to the total). Never a token. Audited as `review.list`.", responses=errors(422))
def list_review(
    caller: Caller, desk: DeskDep,
    kind: Annotated[Literal["record_person", "possible_duplicate"] | None, Query()] = None,
    status: Annotated[Literal["open", "deferred", "decided", "resolved", "all"], Query()] = "open",
    agency: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    min_probability: Annotated[float | None, Query(ge=0, le=1)] = None,
    max_probability: Annotated[float | None, Query(ge=0, le=1)] = None,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    sort: Annotated[Literal["id", "probability_desc", "probability_asc"], Query()] = "id",
) -> Any:
    """A page of review items."""
    return desk.list_review(caller, kind=kind,
                              status=status, agency=agency, min_probability=min_probability,
                              max_probability=max_probability, after=after, limit=limit,
                              sort=sort)


@router.get(
    "/v1/review/{item_id}", response_model=ReviewItemOut, summary="Read one review item",
    description="One item as in `GET /v1/review`, with every record pair across the sides as "
    "an agreement pattern (`pairs`) and the verification tasks asked of agencies "
    "(`verifications`). Audited as `review.read`.",
    responses=errors(404))
def read_review_item(item_id: ItemId, caller: Caller, desk: DeskDep) -> Any:
    """One review item, explained."""
    return desk.read_review_item(caller, item_id)


@router.post(
    "/v1/review/{item_id}/decision", response_model=DecisionOut,
    summary="Decide a review item",
    description="`match`: the two sides' persons are merged now (the oldest key survives; the "
    "others retire and forward to it), and the best pair's records are must-linked to every "
    "record on the other side. `non_match`: every record pair across the sides is "
    "cannot-linked (409 if the sides are one person now: split it first). Both become labels "
    "(source `review`) and constraints that online matching, `mpi link` and every promote "
    "honour until revoked. `defer` parks the item (`deferred`) and stores nothing else. A "
    "decided item cannot be decided again (409); a contradiction with active constraints is "
    "a 409 and nothing is stored. Audited as `review.decide` in the same transaction.",
    responses=errors(404, 409, 422))
def decide(item_id: ItemId, body: DecisionIn, caller: Caller, desk: DeskDep) -> Any:
    """Record a decision on a review item."""
    return desk.decide_review(caller, item_id, decision=body.decision,
                                reason=body.reason)


@router.post(
    "/v1/review/{item_id}/reopen", response_model=ReviewItemOut, summary="Reopen a review item",
    description="A decided, deferred or resolved item becomes `open` again, its decision fields "
    "cleared (the audit event `review.reopen` keeps what it was). Only the item reopens: labels "
    "and constraints its decision stored stay until revoked (`POST /v1/constraints/{id}/revoke`) "
    "and a merge it made stays until split. 409 when the item is open already.",
    responses=errors(404, 409, 422))
def reopen(item_id: ItemId, body: ReopenIn, caller: Caller, desk: DeskDep) -> Any:
    """Reopen a review item."""
    return desk.reopen_review(caller, item_id, reason=body.reason)


@router.post(
    "/v1/labels", response_model=LabelsOut, summary="Import labelled record pairs",
    description="Pairs of records named by (agency, source_record_id) judged the same person "
    "(`is_match`) or not, e.g. duplicates an agency found with its own plaintext. All or none: "
    "any bad row (unknown record, the same record twice, a contradiction with must-links) is a "
    "422 naming each row and field, and nothing is stored. A steward may label any records; "
    "an agency only pairs of its own records. Each pair becomes a label (source `import`) and, "
    "unless `constrain` is false, a constraint, which takes effect at the next re-link; "
    "`unmet` counts those the current keys break. Audited as `labels.import`.",
    responses=errors(422))
def import_labels(body: LabelsIn, caller: Caller, desk: DeskDep) -> Any:
    """Import labelled pairs."""
    rows = [labels.LabelRow(**row.model_dump()) for row in body.labels]
    agency = caller.agency if caller.role == "agency" else None
    return desk.import_labels(caller, rows,
                                agency=agency, constrain=body.constrain)


@router.get(
    "/v1/constraints", response_model=ConstraintsPageOut, summary="List link constraints",
    description="Must-link and cannot-link constraints between records, oldest first, with "
    "where each came from (`review`, `import`, `merge`, `split`). `status`: `active` (default), "
    "`revoked` or `all`. Filters: `person_key` (constraints on a record the person holds now), "
    "`agency` (on a record of that agency) and `agency` + `source_record_id` (on that record). "
    "`next_after` is set when the page is full: pass it as `after` for the next page. Audited "
    "as `constraints.list`.", responses=errors(422))
def list_constraints(
    caller: Caller, desk: DeskDep,
    status: Annotated[Literal["active", "revoked", "all"], Query()] = "active",
    kind: Annotated[Literal["must_link", "cannot_link"] | None, Query()] = None,
    person_key: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    agency: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    source_record_id: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """A page of constraints."""
    return desk.list_constraints(caller, status=status, kind=kind, after=after, limit=limit,
                                 person_key=person_key, agency=agency,
                                 source_record_id=source_record_id)


@router.post(
    "/v1/constraints/{constraint_id}/revoke", response_model=ConstraintOut,
    summary="Revoke a link constraint",
    description="The constraint and its label stop counting (both stay on record, with who "
    "revoked them and why). Keys change only at the next re-link. Audited as "
    "`constraints.revoke`.", responses=errors(404, 409, 422))
def revoke_constraint(constraint_id: Annotated[int, Path(ge=1, le=2**62)], body: RevokeIn,
                      caller: Caller, desk: DeskDep) -> Any:
    """Revoke one constraint."""
    return desk.revoke_constraint(caller, constraint_id, reason=body.reason)


@router.post(
    "/v1/persons/{person_key}/merge", response_model=RegroupOut, summary="Merge persons",
    description="Merge the listed active persons with the one in the path. The oldest key "
    "survives; the others are retired with it as successor (lineage and key events, cause "
    "`merge`). Every record becomes must-linked to the oldest record, so re-links and "
    "promotes keep them together. 409 when a cannot-link stands between them; the 409 names "
    "each blocking constraint (`#id (kind)` in `detail`, and `errors[].field` `constraint_id`). "
    "Audited as "
    "`persons.merge` in the same transaction.", responses=errors(404, 409, 422))
def merge(person_key: PersonKey, body: MergeIn, caller: Caller, desk: DeskDep) -> Any:
    """Merge persons."""
    return desk.merge_persons(caller, person_key, others=body.person_keys,
                                     reason=body.reason)


@router.post(
    "/v1/persons/{person_key}/split", response_model=RegroupOut, summary="Split a person",
    description="Place every active record of the person in one of two or more groups. The "
    "group with most records keeps the key (tie: the one with the oldest record); the others "
    "get new keys with split lineage (key events, cause `split`). Every record pair across "
    "groups becomes cannot-linked. 422 names each record that is not the person's or is "
    "listed twice, and records left out; 409 when a must-link crosses the groups, naming each "
    "blocking constraint (`#id (kind)`; `errors[].field` `constraint_id`). Audited as "
    "`persons.split` in the same transaction.", responses=errors(404, 409, 422))
def split(person_key: PersonKey, body: SplitIn, caller: Caller, desk: DeskDep) -> Any:
    """Split a person."""
    groups = [[(r.agency, r.source_record_id) for r in g] for g in body.groups]
    return desk.split_person(caller, person_key, groups=groups,
                                    reason=body.reason)
