"""Request (``XIn``) and response (``XOut``) models of the HTTP API.

Owns: the wire shapes and their OpenAPI documentation. Token records are checked in depth by
mpi/intake.py (row, field and reason); these models only fix the outline. Must not: hold logic.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from api.errors import ProblemItemOut

MAX_BATCH = 10_000
Outcome = Literal["new", "linked", "review", "unchanged", "updated", "withdrawn"]
Role = Literal["agency", "steward", "approver", "researcher", "auditor", "admin"]
AttributeValue = str | int | float | bool | None


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


UtcTime = Annotated[dt.datetime, AfterValidator(_utc)]
"""The registry stores naive UTC; the API states the zone (RFC 3339)."""


class _TokenFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = Field(description="Linkage schema version the tokens were made under.")
    tokens: dict[str, str | None] = Field(
        description="Token name (e.g. `given_name`, `given_name.nysiis`) to `key_id:base64url`.")
    attributes: dict[str, AttributeValue] | None = Field(
        None, description="Non-identifying attributes carried with the record.")
    research_consent: bool | None = None


class TokenRecordIn(_TokenFields):
    """One tokenized record, as `mpi tokenize` writes it."""

    source_record_id: str = Field(description="The agency's own id for the record.")


class RecordReplaceIn(_TokenFields):
    """A new version of one record; its id comes from the path (a different one is refused)."""

    source_record_id: str | None = Field(None, description="Optional; must equal the path id.")


class MatchIn(_TokenFields):
    """A tokenized record to score without storing it."""

    source_record_id: str | None = Field(None, description="Ignored; nothing is stored.")


class RecordsIn(BaseModel):
    """A batch of tokenized records for the caller's agency; stored all or none."""

    model_config = ConfigDict(extra="forbid")

    records: list[TokenRecordIn] = Field(min_length=1, max_length=MAX_BATCH)


class RecordResultOut(BaseModel):
    """What happened to one record."""

    source_record_id: str
    person_key: str | None
    outcome: Outcome


class RecordsOut(BaseModel):
    """One result per submitted record, in submission order."""

    results: list[RecordResultOut]


class RecordOut(BaseModel):
    """One of the agency's records (tokens are never returned)."""

    agency: str
    source_record_id: str
    status: Literal["active", "withdrawn"]
    version: int
    person_key: str | None
    research_consent: bool | None
    attributes: dict[str, Any] | None
    created_at: UtcTime
    updated_at: UtcTime


class CandidateOut(BaseModel):
    """A candidate person, graded in the manner of FHIR `$match`."""

    person_key: str
    match_probability: float
    grade: Literal["certain", "probable", "possible"]


class MatchOut(BaseModel):
    """Candidates, best first."""

    candidates: list[CandidateOut]


class LinkedRecordOut(BaseModel):
    """A record linked to a person (only those the caller may see)."""

    agency: str
    source_record_id: str


class PersonOut(BaseModel):
    """A person key's status, successors when retired, and visible linked records."""

    person_key: str
    status: Literal["active", "retired"]
    superseded_by: list[str]
    records: list[LinkedRecordOut]


class JobOut(BaseModel):
    """A bulk job's state, progress, outcome counts and per-row errors (first 1,000)."""

    job_id: str
    kind: str
    state: Literal["queued", "running", "completed", "failed", "interrupted"]
    agency: str | None
    total: int | None
    done: int
    counts: dict[str, int]
    errors: list[ProblemItemOut]
    created_at: UtcTime
    updated_at: UtcTime
    message: str | None = Field(None, description="Latest progress message (model training).")
    result: dict[str, Any] | None = Field(None, description="What a finished job produced, e.g. "
                                          "`{\"version\": \"candidate-v001\"}` for training.")


KeyScope = Literal["shared", "agency"]
_KEY_SCOPE_DOC = ("`shared` (default): the agency sees master person keys, shared by every "
                  "agency, and `/v1/match` may return persons held only by other agencies. "
                  "`agency`: the agency sees keys derived for it alone, and no route tells it "
                  "that another agency holds a person (Decision 72).")


class AgencyIn(BaseModel):
    """A new agency."""

    model_config = ConfigDict(extra="forbid")

    agency: str = Field(min_length=1, max_length=64,
                        description="Letters, digits, `_`, `.` or `-`, starting with a letter or digit.")
    key_scope: KeyScope = Field("shared", description=_KEY_SCOPE_DOC)


class AgencyUpdateIn(BaseModel):
    """A change to an agency's settings."""

    model_config = ConfigDict(extra="forbid")

    key_scope: KeyScope = Field(description=_KEY_SCOPE_DOC)


class AgencyOut(BaseModel):
    """A registered agency."""

    agency: str
    created_at: UtcTime
    key_scope: KeyScope = Field(description=_KEY_SCOPE_DOC)


class AgenciesOut(BaseModel):
    """Every agency."""

    agencies: list[AgencyOut]


class PrincipalIn(BaseModel):
    """A new principal; `agency` is required for roles agency and approver, refused otherwise."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    role: Role
    agency: str | None = None
    human_email: str | None = Field(None, max_length=254, description="The person who holds "
                                    "the key: required for roles steward, approver, researcher, "
                                    "auditor and admin, refused for `agency`. One human holds "
                                    "at most one active principal (409), and acts in one "
                                    "capacity per extract request (Decision 80).")


class HumanIn(BaseModel):
    """The person behind an existing principal."""

    model_config = ConfigDict(extra="forbid")

    human_email: str = Field(min_length=3, max_length=254)


class PrincipalOut(BaseModel):
    """A principal (its key is never shown again; `key_prefix` identifies the live key)."""

    principal_id: str
    name: str
    role: Role
    agency: str | None
    created_at: UtcTime
    revoked_at: UtcTime | None
    key_prefix: str | None
    human_email: str | None = Field(None, description="The person who holds it (null for an "
                                    "agency's system, or a principal created before Decision "
                                    "80: such a principal may not approve).")


class PrincipalsOut(BaseModel):
    """Every principal."""

    principals: list[PrincipalOut]


class PrincipalKeyOut(BaseModel):
    """A principal and its new API key, shown this once."""

    principal: PrincipalOut
    api_key: str


class AuditEventOut(BaseModel):
    """One hash-chained audit event."""

    audit_seq: int
    occurred_at: UtcTime
    principal: str
    action: str
    target: str
    outcome: str
    detail: dict[str, Any] | None
    prev_hash: str
    entry_hash: str


class AuditPageOut(BaseModel):
    """A page of audit events; pass `next_after` as `after` for the next page."""

    events: list[AuditEventOut]
    next_after: int | None


class AuditVerifyOut(BaseModel):
    """The result of verifying the whole chain and its signed checkpoints."""

    ok: bool
    events: int
    first_bad_seq: int | None
    reason: str | None
    anchored: int | None = Field(None, description="Events covered by the latest signed "
                                 "checkpoint (when the log verified).")


class AuditCheckpointOut(BaseModel):
    """One signed checkpoint: the log held ``count`` events and the last one hashed ``head``."""

    count: int
    head: str
    keyed_from: int = Field(description="First event sealed with the keyed (HMAC) chain; "
                            "earlier events use the plain SHA-256 rule.")
    at: str
    signature: str = Field(description="Base64 Ed25519 signature over `mpi-audit-checkpoint:v1\\n`"
                           " followed by the compact, key-sorted JSON of count, head, "
                           "keyed_from and at.")


class AuditCheckpointsOut(BaseModel):
    """Signed audit checkpoints and the public key that verifies them."""

    algorithm: Literal["Ed25519"]
    public_key_pem: str
    fingerprint: str
    checkpoints: list[AuditCheckpointOut]


class HealthOut(BaseModel):
    """Liveness."""

    status: Literal["ok"]


class ReadyOut(BaseModel):
    """Readiness: the registry is open."""

    status: Literal["ready"]
    model_version: str


class ProportionTestOut(BaseModel):
    """A two-sided two-proportion z-test of a group against all other active records."""

    z: float
    p: float


class GroupQualityOut(BaseModel):
    """Linkage quality of one group; every figure is null when the group is suppressed."""

    group: str | None = Field(description="The attribute value; null for records without it.")
    label: str = Field(description="The value, or `(missing)`.")
    suppressed: bool = Field(description="Fewer records than `MPI_DISCLOSURE_THRESHOLD` "
                             "(`small`), or suppressed with a lone small group (`complementary`).")
    suppression: Literal["small", "complementary"] | None
    records: int | None = Field(description="Active records in the group.")
    cross_agency_link_share: float | None = Field(description="Share of the group's records "
                                                  "whose person has active records at 2+ agencies.")
    review_share: float | None = Field(description="Share with an open `record_person` review "
                                       "item, or whose person is in an open `possible_duplicate`.")
    singleton_rate: float | None = Field(description="Share whose person has no other record.")
    mean_link_probability: float | None = Field(description="Mean stored review-item match "
                                                "probability of linked records (see notes).")
    link_probability_records: int | None = Field(description="Records behind "
                                                 "`mean_link_probability`.")
    precision: float | None = Field(description="From labels on records without an active "
                                    "constraint (see notes); null without such pairs or when "
                                    "withheld.")
    recall: float | None = Field(description="As `precision`, among labelled matches.")
    cross_agency_test: ProportionTestOut | None
    singleton_test: ProportionTestOut | None
    flagged: bool = Field(description="Differs from the rest beyond chance on either test.")
    precision_pairs: int | None = Field(default=None, description="Labelled pairs now linked "
                                        "(the precision's count).")
    recall_pairs: int | None = Field(default=None, description="Labelled matches (the "
                                     "recall's count).")
    precision_interval: tuple[float, float] | None = Field(
        default=None, description="95% Wilson score interval of `precision`.")
    recall_interval: tuple[float, float] | None = Field(
        default=None, description="95% Wilson score interval of `recall`.")
    precision_withheld: bool = Field(default=False, description="Fewer than 10 pairs: "
                                     "`precision` is withheld, `precision_pairs` shown.")
    recall_withheld: bool = Field(default=False, description="As `precision_withheld`.")
    constrained_pairs: int | None = Field(default=None, description="Labelled pairs left out "
                                          "because a record is in an active constraint.")


class LinkageQualityOut(BaseModel):
    """The equity report: linkage quality per group of one record attribute."""

    attribute: str
    total_records: int = Field(description="Active records (suppressed groups included).")
    disclosure_threshold: int
    alpha: float = Field(description="Family-wise significance level.")
    tests: int = Field(description="Tests run (two per reported group).")
    p_threshold: float | None = Field(description="Bonferroni threshold `alpha / tests`.")
    labels_available: bool
    groups: list[GroupQualityOut]
    flagged: list[str] = Field(description="Labels of flagged groups.")
    notes: list[str] = Field(description="How each figure is computed and its limits.")
