"""Wire shapes of the steward routes: review queue, labels, constraints, merge and split.

Owns: the request (``XIn``) and response (``XOut``) models of api/routes/review.py, and their
OpenAPI documentation. Must not: hold logic. No shape here carries a token.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import UtcTime

Decision = Literal["match", "non_match", "defer"]
Reason = Field(min_length=1, max_length=2000, description="Why (kept with the decision and "
               "in the audit log).")


class RecordRefIn(BaseModel):
    """A record named by its agency and the agency's own id."""

    model_config = ConfigDict(extra="forbid")

    agency: str = Field(min_length=1, max_length=64)
    source_record_id: str = Field(min_length=1, max_length=256)


class RecordRefOut(BaseModel):
    """A record, and (where shown) its current person key."""

    agency: str | None
    source_record_id: str | None
    person_key: str | None = None


class ComparisonOut(BaseModel):
    """One comparison's agreement level and its match-weight contribution (a waterfall step)."""

    comparison: str = Field(description="Identifier field (or field group, e.g. `household`).")
    level: int = Field(description="-1 null, 0.. the model's levels in order, last = else.")
    label: str = Field(description="The level's name, e.g. `exact`, `phonetic equal`.")
    match_weight: float
    agrees: bool
    detail: str | None = Field(default=None, description="What else was checked: when no "
                               "level agrees, each level as `differs` or `not comparable`; for "
                               "a date of birth its parts (year, month, day, one digit).")


class NameFrequencyOut(BaseModel):
    """How common each name token of a record is in the registry, as a band (never the token
    or a count): `unique`, `rare`, `uncommon`, `common`, `very common`; null when missing."""

    given_name: str | None = None
    family_name: str | None = None


class SidesNameFrequencyOut(BaseModel):
    """Name-frequency bands of the explained pair's two records."""

    left: NameFrequencyOut
    right: NameFrequencyOut


class PairPatternOut(BaseModel):
    """One record pair across an item's sides as an agreement pattern."""

    left: RecordRefOut
    right: RecordRefOut
    match_weight: float
    match_probability: float
    agreement: dict[str, str] = Field(description="Comparison -> level label, as in "
                                      "`explanation.agreement`.")


class PairsOut(BaseModel):
    """Every record pair across the sides, best first (at most 200; `total` counts them)."""

    total: int
    pairs: list[PairPatternOut]


class VerificationTaskOut(BaseModel):
    """A verification task as the steward sees it on the item (no record ids)."""

    task_id: int
    agency: str
    status: Literal["open", "answered"]
    question: str
    answer: Literal["same", "different", "unsure"] | None
    answer_note: str | None
    created_at: UtcTime
    answered_at: UtcTime | None


class ExplanationOut(BaseModel):
    """The best-scoring record pair across an item's sides under the active model."""

    model_version: str
    left: RecordRefOut
    right: RecordRefOut
    prior_weight: float = Field(description="Waterfall start: log2 prior odds.")
    comparisons: list[ComparisonOut]
    match_weight: float = Field(description="prior_weight + every comparison's match_weight.")
    match_probability: float
    agreement: dict[str, str] = Field(description="Comparison -> agreement level label.")
    name_frequency: SidesNameFrequencyOut | None = None


class SideCountsOut(BaseModel):
    """How many active records each side of an item holds now."""

    a: int
    b: int


class ReviewItemOut(BaseModel):
    """A review item: what was queued, its sides now, the explanation, and any decision."""

    item_id: int
    kind: Literal["record_person", "possible_duplicate"]
    status: Literal["open", "deferred", "decided", "resolved"]
    match_probability: float = Field(description="As scored when the item was queued.")
    match_weight: float
    model_version: str | None
    created_at: UtcTime
    current_probability: float = Field(description="The best pair's probability under the "
                                       "model that last scored the item (rescored after every "
                                       "promote and re-link); filters and sorts use it.")
    current_weight: float
    scored_model_version: str | None
    person_key: str = Field(description="The candidate person (record_person) or the person the "
                            "bridging record joined (possible_duplicate).")
    other_person_key: str | None = Field(description="The other person (possible_duplicate).")
    record: RecordRefOut | None = Field(description="The queued record (record_person).")
    records: SideCountsOut
    agencies: list[str] = Field(description="Agencies holding records on either side.")
    explanation: ExplanationOut | None = Field(
        description="Null when a side has no active record any more.")
    decision: Decision | None
    decision_reason: str | None
    decided_by: str | None
    decided_at: UtcTime | None
    pairs: PairsOut | None = Field(default=None, description="Every record pair across the "
                                   "sides (one item's page only).")
    verifications: list[VerificationTaskOut] | None = Field(
        default=None, description="Verification tasks asked of agencies (one item's page only).")


class ReviewPageOut(BaseModel):
    """A page of review items; pass `next_after` as `after` for the next page (sorted by
    probability, it is the number of items to skip)."""

    items: list[ReviewItemOut]
    next_after: int | None


class DecisionIn(BaseModel):
    """A steward's decision on a review item."""

    model_config = ConfigDict(extra="forbid")

    decision: Decision
    reason: str = Reason


class DecisionOut(ReviewItemOut):
    """The item after the decision, with what it stored and changed."""

    labels: int
    constraint_ids: list[int]
    retired: list[str]
    records_moved: int


class LabelIn(BaseModel):
    """One labelled pair of records."""

    model_config = ConfigDict(extra="forbid")

    agency_a: str = Field(min_length=1, max_length=64)
    source_record_id_a: str = Field(min_length=1, max_length=256)
    agency_b: str = Field(min_length=1, max_length=64)
    source_record_id_b: str = Field(min_length=1, max_length=256)
    is_match: bool
    reason: str | None = Field(None, max_length=2000)


class LabelsIn(BaseModel):
    """Labelled pairs to import (all or none)."""

    model_config = ConfigDict(extra="forbid")

    labels: list[LabelIn] = Field(min_length=1, max_length=10_000)
    constrain: bool = Field(True, description="Also make each pair a must-link (match) or "
                            "cannot-link (non-match) constraint.")


class LabelsOut(BaseModel):
    """What an import stored."""

    labels: int
    label_ids: list[int]
    constraint_ids: list[int]
    unmet: int = Field(description="New constraints the current keys break; the next re-link "
                       "(`mpi link`, a promote) makes them hold.")


class ConstraintOut(BaseModel):
    """A must-link or cannot-link constraint between two records."""

    constraint_id: int
    kind: Literal["must_link", "cannot_link"]
    source: Literal["review", "import", "merge", "split"]
    source_ref: str | None
    label_id: int | None
    records: list[RecordRefOut]
    reason: str | None
    created_by: str
    created_at: UtcTime
    revoked_at: UtcTime | None
    revoked_by: str | None
    revoke_reason: str | None


class ConstraintsPageOut(BaseModel):
    """A page of constraints; pass `next_after` as `after` for the next page."""

    constraints: list[ConstraintOut]
    next_after: int | None


class RevokeIn(BaseModel):
    """Why a constraint is revoked."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Reason


class MergeIn(BaseModel):
    """Persons to merge into the one in the path."""

    model_config = ConfigDict(extra="forbid")

    person_keys: list[str] = Field(min_length=1, max_length=100,
                                   description="The other active person keys.")
    reason: str = Reason


class SplitIn(BaseModel):
    """Where each of the person's active records goes: every record in exactly one group."""

    model_config = ConfigDict(extra="forbid")

    groups: list[list[RecordRefIn]] = Field(min_length=2, max_length=100)
    reason: str = Reason


class RegroupOut(BaseModel):
    """What a merge or split changed."""

    person_key: str = Field(description="Merge: the surviving key. Split: the key split.")
    person_keys: list[str] = Field(description="The persons now holding the records.")
    retired: list[str]
    new_keys: list[str]
    records_moved: int
    labels: int
    constraint_ids: list[int]
