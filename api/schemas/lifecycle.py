"""Request and response models of the model-lifecycle routes (``/v1/models``).

Owns: the wire shapes of training, listing, inspecting, evaluating, previewing and promoting
model versions. Must not: hold logic. No shape here carries a token or a person key.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import UtcTime


class TrainIn(BaseModel):
    """Training options; every field is optional."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(42, ge=0, le=2**31 - 1, description="Seed for sampling and training.")
    sample: float = Field(1.0, gt=0, le=1, description="Fraction of active records to train on.")
    name: str = Field("candidate", pattern=r"^[a-z0-9_]{1,40}$",
                      description="Model name; the version is `<name>-v<NNN>`.")
    link: float | None = Field(None, gt=0, lt=1, description="Link threshold (match "
                               "probability) of the version; default: the active version's.")
    review: float | None = Field(None, gt=0, lt=1, description="Review threshold; default: "
                                 "the active version's.")


class ThresholdsOut(BaseModel):
    """Match-probability thresholds (and, in detail views, the same as match weights)."""

    link: float
    review: float
    link_weight: float | None = None
    review_weight: float | None = None


class ModelSummaryOut(BaseModel):
    """One version in the list."""

    version: str
    active: bool
    location: str = Field(description="`shipped` (with mpi or MPI_MODELS_DIR) or `registry` "
                          "(trained here, DATA_DIR/models).")
    parent_version: str | None
    trained_at: str | None
    thresholds: ThresholdsOut | None
    training_records: int | None
    label_count: int
    activated_at: list[UtcTime] = Field(description="When this registry activated it.")


class ModelListOut(BaseModel):
    """Every version, the active one marked."""

    models: list[ModelSummaryOut]


class LevelOut(BaseModel):
    """One comparison level: m, u (null for the null level) and match weight log2(m/u)."""

    level: int = Field(description="-1 null, then definition order; the last is `else`.")
    label: str
    m_probability: float | None
    u_probability: float | None
    match_weight: float


class ComparisonOut(BaseModel):
    """One comparison's levels."""

    comparison: str
    levels: list[LevelOut]


class LevelOrderViolationOut(BaseModel):
    """Two levels of one comparison whose weights are out of order (Decision 89)."""

    comparison: str
    stronger: str = Field(description="The level whose pairs also satisfy `weaker`.")
    stronger_weight: float
    weaker: str
    weaker_weight: float


class ModelOut(ModelSummaryOut):
    """A version's parameters, thresholds and metrics."""

    thresholds: ThresholdsOut
    probability_two_random_records_match: float
    prior_weight: float
    comparisons: list[ComparisonOut]
    level_order_violations: list[LevelOrderViolationOut] = Field(
        description="Level pairs where a stronger agreement weighs less than a weaker one in "
                    "the same comparison; empty for a sane model (training pools them).")
    training: dict[str, Any] | None
    training_data: dict[str, Any] | None
    splink_version: str | None
    metrics: dict[str, Any] = Field(description="`recorded`: accuracy written at training; "
                                    "`latest_evaluation`: the newest `evaluate` result.")


class EvaluationOut(BaseModel):
    """Label metrics at the version's thresholds plus unsupervised diagnostics."""

    version: str
    evaluation_seq: int
    labels: dict[str, int]
    at_link_threshold: dict[str, float | int | None]
    at_review_threshold: dict[str, float | int | None]
    labelled_pairs_in_review_band: int
    diagnostics: dict[str, float | int | None]


class ChurnOut(BaseModel):
    """What reconciling a partition with the current keys changes."""

    records_changing_key: int
    keys_affected: int
    persons_merging: int
    persons_splitting: int
    new_keys: int
    persons_after: int


class ImpactOut(BaseModel):
    """A candidate against the active version over the whole registry (nothing changed)."""

    version: str
    active_version: str
    same_parameters: bool
    records: int
    promote: ChurnOut = Field(description="What promoting the version would change now.")
    active_relink: ChurnOut = Field(description="What re-linking with the active version would "
                                    "change (drift of online matching from a batch re-link).")
    pairs: dict[str, int]
    review_items: dict[str, int]
    sample: list[dict[str, Any]] = Field(description="Changed pairs (largest weight change "
                                         "first): records as agency + source_record_id, each "
                                         "version's decision, total and per-comparison level "
                                         "and match weight.")


class PromoteOut(BaseModel):
    """The churn of a promotion."""

    from_version: str
    to_version: str
    mode: str = Field(description="`relink`, `activation_only` (same parameters and "
                      "thresholds) or `already_active`.")
    labels: int
    records: int
    records_changing_key: int
    keys_affected: int
    persons_merging: int
    persons_splitting: int
    new_keys: int
    key_events: int
    persons: int | None = None
