"""Request (``XIn``) and response (``XOut``) models of the research-extract routes.

Owns: the wire shapes of data dictionaries, extract requests, approvals, the accounting of
disclosures, the turnaround report and the signing key, with their OpenAPI documentation. The
domain (mpi/extract/datasets.py, request.py) checks the contents in depth with a field and
reason for every problem; these models fix the outline. Must not: hold logic.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import UtcTime
from api.schemas.consent import RecallOut

Generalization = str
Klass = Literal["quasi_identifier", "sensitive", "other"]
AttrType = Literal["string", "integer", "number", "boolean", "date"]


class DictionaryEntryIn(BaseModel):
    """One attribute of an agency's dataset: what it is and how it may be released."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(max_length=64, description="The record attribute's name (as agencies send "
                      "it in `attributes`).")
    type: AttrType
    description: str = Field(max_length=2000)
    klass: Klass = Field(alias="class", description="`quasi_identifier` (subject to generalization "
                         "and k-anonymity), `sensitive` or `other`.")
    allowed_generalizations: list[Generalization] = Field(
        min_length=1, max_length=8, description="Among `none`, `month`, `year`, `top_code_90`, "
        "`age_band_5`, `zip3`, `date_shift`, `suppress`, as the type allows.")
    default_generalization: Generalization | None = Field(
        None, description="Default: dates to month, birth dates to year, ages top-coded at 90, "
        "ZIP codes to ZIP3, else none (when allowed).")
    non_identifying_signed_off_by: str | None = Field(
        None, max_length=200, description="Refused (422) when set: an agency cannot sign off "
        "its own attribute. A steward does, with `POST /v1/datasets/{agency}/{dataset}/"
        "attributes/{attribute}/sign-off` (Decision 94); a re-PUT keeps that sign-off unless "
        "the attribute's type or class changes.")
    hierarchy: dict[str, str] | list[dict[str, str]] | None = Field(
        None, description="String attributes: grouping map(s) value -> group (-> larger "
        "group), the levels the risk search may generalize to before suppressing.")


class DatasetIn(BaseModel):
    """An agency's dataset dictionary (replaces the previous one)."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(None, max_length=2000)
    attributes: list[DictionaryEntryIn] = Field(max_length=200)


class DictionaryEntryOut(BaseModel):
    """One dictionary entry."""

    model_config = ConfigDict(populate_by_name=True)

    name: str
    type: str
    description: str
    klass: str = Field(alias="class", serialization_alias="class")
    allowed_generalizations: list[str]
    default_generalization: str
    non_identifying_signed_off_by: str | None = Field(
        None, description="The steward principal that signed this `other` attribute off as "
        "non-identifying (then it is not a quasi-identifier of rows extracts), if one did.")
    non_identifying_signed_off_at: UtcTime | None = None
    non_identifying_sign_off_reason: str | None = None
    hierarchy: dict[str, str] | list[dict[str, str]] | None = None


class SignOffIn(BaseModel):
    """A steward's sign-off of an attribute as non-identifying, or its revocation."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000, description="Why the attribute does not "
                        "identify anyone (or why the sign-off is withdrawn).")


class DatasetOut(BaseModel):
    """One agency's dataset dictionary."""

    agency: str
    dataset: str
    description: str | None
    updated_by: str
    updated_at: UtcTime
    attributes: list[DictionaryEntryOut]


class DatasetsOut(BaseModel):
    """The catalogue researchers choose from."""

    datasets: list[DatasetOut]


class RequestedAttributeIn(BaseModel):
    """One requested attribute, optionally with a generalization allowed by the dictionary."""

    model_config = ConfigDict(extra="forbid")

    agency: str = Field(max_length=64)
    dataset: str = Field(max_length=64)
    name: str = Field(max_length=64)
    generalization: str | None = Field(None, max_length=32, description="Default: the entry's.")


class CohortIn(BaseModel):
    """Persons with an active record at `agency` (optionally with a date attribute in range)."""

    model_config = ConfigDict(extra="forbid")

    agency: str = Field(max_length=64)
    attribute: str | None = Field(None, max_length=64, description="A date attribute of the "
                                  "agency's dictionary, e.g. `enrolled_on`.")
    start: dt.date | None = None
    end: dt.date | None = None


class ExtractIn(BaseModel):
    """A research extract request."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(max_length=200, description="The project.")
    purpose: str = Field(max_length=4000)
    agreement_ref: str = Field(max_length=200, description="The data use agreement's reference.")
    attributes: list[RequestedAttributeIn] = Field(max_length=200)
    cohort: CohortIn
    kind: Literal["rows", "aggregate"] = "rows"
    dimensions: list[str] | None = Field(None, max_length=4, description="Aggregate only: "
                                         "requested attributes (`agency.name`) to count by.")
    demographics: list[str] | None = Field(None, max_length=8, description="Attributes to break "
                                           "the linkage-quality report down by.")
    k: int = Field(5, description="k-anonymity over the quasi-identifiers (2-100).")
    threshold: int = Field(11, description="Aggregates: smallest published cell (>= 11).")
    date_shift: bool = Field(False, description="Shift each person's dates by a per-person "
                             "offset (keeps intervals within a person).")
    l: int = Field(2, description="Rows: l-diversity of sensitive attributes (1-20).")  # noqa: E741
    l_entropy: bool = Field(False, description="Rows: entropy l-diversity as well as distinct.")
    max_suppression: float = Field(0.05, description="Rows: share of rows global recoding may "
                                   "leave to local recoding and suppression (0-0.5).")
    max_risk: float | None = Field(None, description="Rows: the largest prosecutor risk any "
                                   "released row may carry (default 1/k; at most 1/k, at least "
                                   "0.01). Classes grow to meet it; a request or build that "
                                   "cannot meet it is refused (422 `max_risk`; a build fails "
                                   "409-style with `build_error`), Decision 94.")
    expires_at: UtcTime = Field(description="After this, no approval or download (<= 730 days).")
    download_limit: int = Field(3, description="Most downloads (1-50).")


class ApprovalIn(BaseModel):
    """A decision on a request in the caller's capacity."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "deny"]
    reason: str | None = Field(None, max_length=2000)


class ApprovalOut(BaseModel):
    """One decision."""

    principal_id: str
    capacity: str = Field(description="`agency:<name>` (its approver) or `steward`.")
    decision: str
    reason: str | None
    decided_at: UtcTime


class BuildOut(BaseModel):
    """The latest build."""

    build_seq: int
    built_at: UtcTime
    rows: int
    persons: int
    manifest_sha256: str
    first_delivered_at: UtcTime | None


class ExtractOut(BaseModel):
    """An extract request, its approvals and its latest build."""

    extract_id: str
    requester_id: str
    title: str
    purpose: str
    agreement_ref: str
    kind: str
    status: Literal["pending", "approved", "denied", "closed"]
    agencies: list[str]
    attributes: list[dict[str, Any]]
    cohort: dict[str, Any]
    dimensions: list[str]
    demographics: list[str]
    k: int
    threshold: int
    date_shift: bool
    l: int = 2  # noqa: E741
    l_entropy: bool = False
    max_suppression: float = 0.05
    max_risk: float | None = Field(None, description="Rows: the request's maximum prosecutor "
                                   "risk (null: 1/k).")
    risk_report: dict[str, Any] | None = Field(None, description="Rows: the disclosure risk "
                                               "computed when the request was made, before "
                                               "approval (Decision 74); `policy` says whether "
                                               "it meets the request's maximum risk (Decision "
                                               "94).")
    expires_at: UtcTime
    expired: bool
    download_limit: int
    downloads: int
    build_state: Literal["none", "queued", "running", "built", "failed"]
    build_error: str | None
    created_at: UtcTime
    decided_at: UtcTime | None
    approved_at: UtcTime | None
    delivered_at: UtcTime | None
    closed_at: UtcTime | None
    approvals: list[ApprovalOut]
    pending_approvals: list[str]
    latest_build: BuildOut | None
    recall: RecallOut = Field(description="Persons in delivered builds who have opted out "
                              "since (counts only; Decision 79).")


class ExtractsOut(BaseModel):
    """Extract requests the caller may see."""

    extracts: list[ExtractOut]


class RecipientOut(BaseModel):
    """Who received an extract."""

    principal_id: str
    name: str | None


class ReleasedAttributeOut(BaseModel):
    """One released attribute."""

    agency: str
    dataset: str
    name: str
    generalization: str


class DisclosureOut(BaseModel):
    """One extract that included the person."""

    extract_id: str
    project: str
    purpose: str
    agreement_ref: str
    kind: str
    recipient: RecipientOut
    disclosed_at: UtcTime
    builds: list[int]
    attributes: list[ReleasedAttributeOut]


class DisclosuresOut(BaseModel):
    """The accounting of disclosures for one person."""

    person_key: str
    disclosures: list[DisclosureOut]


class SpreadOut(BaseModel):
    """Median and 90th percentile of a duration, in hours."""

    count: int
    median_hours: float | None
    p90_hours: float | None


class RequestReportOut(BaseModel):
    """Request turnaround."""

    requests: int
    by_status: dict[str, int]
    request_to_decision: SpreadOut
    approval_to_delivery: SpreadOut
    notes: list[str]


class SigningKeyOut(BaseModel):
    """The service's public Ed25519 key that signs extract manifests."""

    algorithm: str
    public_key_pem: str
    fingerprint: str
