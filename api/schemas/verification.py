"""Wire shapes of reopening review items and of agency verification tasks.

Owns: the request (``XIn``) and response (``XOut``) models of ``POST /v1/review/{id}/reopen``
and api/routes/verifications.py, and their OpenAPI documentation. Must not: hold logic. No
shape here carries a token, a person key or another agency's record id.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import UtcTime
from api.schemas.review import Reason, VerificationTaskOut

Answer = Literal["same", "different", "unsure"]


class ReopenIn(BaseModel):
    """Why a review item is opened again."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Reason


class VerificationIn(BaseModel):
    """A steward's request that the agencies holding an item's pair verify it."""

    model_config = ConfigDict(extra="forbid")

    question: str | None = Field(default=None, max_length=500, description="Shown to the "
                                 "agencies; default: `Do these records describe the same "
                                 "person?`. Do not put identifying details here.")


class VerificationOut(BaseModel):
    """The tasks created: one per agency holding a record of the item's best pair."""

    item_id: int
    tasks: list[VerificationTaskOut]


class AgencyTaskOut(BaseModel):
    """A verification task as an agency sees it: only its own record id(s)."""

    task_id: int
    question: str
    status: Literal["open", "answered"]
    source_record_ids: list[str] = Field(description="The agency's own record(s) of the pair "
                                         "(two when it holds both).")
    answer: Answer | None
    answer_note: str | None
    created_at: UtcTime
    answered_at: UtcTime | None


class AgencyTasksPageOut(BaseModel):
    """A page of the agency's tasks; pass `next_after` as `after` for the next page."""

    tasks: list[AgencyTaskOut]
    next_after: int | None


class AnswerIn(BaseModel):
    """An agency's answer: do its records and the other agency's describe the same person?"""

    model_config = ConfigDict(extra="forbid")

    answer: Answer
    note: str | None = Field(default=None, max_length=500, description="Optional; seen by the "
                             "steward only.")
