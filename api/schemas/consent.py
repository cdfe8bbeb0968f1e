"""Request and response models of person-level consent and of an extract's recall flag.

Owns: the wire shapes of ``/v1/persons/{person_key}/consent`` and the ``recall`` object of an
extract, with their OpenAPI documentation (Decision 79). The domain (mpi/identity/consent.py)
checks the contents with a field and reason for every problem. Must not: hold logic.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import UtcTime

Decision = Literal["opt_out", "opt_in"]


class ConsentIn(BaseModel):
    """An opt-out or opt-in for a person."""

    model_config = ConfigDict(extra="forbid")

    decision: Decision = Field(description="`opt_out` excludes the person from every future "
                               "extract; `opt_in` lifts an opt-out of the same scope only.")
    reason: str | None = Field(None, max_length=2000, description="Why (e.g. the person's "
                               "letter of a given date). Required for `opt_in`: an opt-in after "
                               "an opt-out needs its own provenance.")
    date: dt.date | None = Field(None, description="When the person expressed it (not in the "
                                 "future); today when absent.")
    source_agency: str | None = Field(None, max_length=64, description="The scope: an agency "
                                      "records in its own name (absent or its own agency); a "
                                      "steward may name any agency (e.g. to lift its opt-out "
                                      "on the person's documented request), or none for the "
                                      "steward's own scope.")


class ConsentEntryOut(BaseModel):
    """One recorded opt-out or opt-in (never changed or deleted)."""

    decision: Decision
    source_agency: str | None = Field(description="The scope; null is the steward's own scope.")
    date: dt.date
    reason: str | None
    recorded_by: str = Field(description="The principal who recorded it.")
    recorded_at: UtcTime


class ConsentScopeOut(BaseModel):
    """The latest decision of one scope (it alone counts for that scope)."""

    source_agency: str | None
    consent: Decision


class ConsentOut(BaseModel):
    """A person's consent as the caller may see it."""

    person_key: str
    entries: list[ConsentEntryOut] = Field(description="An agency sees only its own scope's "
                                           "entries; a steward sees every entry, including "
                                           "those recorded on keys merged or split into this one.")
    scopes: list[ConsentScopeOut]
    excluded_from_research: bool | None = Field(description="Steward only (null for an "
                                                "agency): whether any scope's latest entry is "
                                                "an opt-out or a record says "
                                                "`research_consent: false`.")
    record_level_opt_out: bool | None = Field(description="Steward only: a record naming the "
                                              "person says `research_consent: false` (an "
                                              "opt-in here never lifts that).")


class RecalledBuildOut(BaseModel):
    """A delivered build that includes persons who have opted out since (counts only)."""

    build_seq: int
    first_delivered_at: UtcTime
    opted_out_persons: int


class RecallOut(BaseModel):
    """Opt-outs after delivery: the recipient must destroy the flagged builds."""

    flagged: bool = Field(description="A delivered build includes a person who has opted out "
                          "since.")
    rebuild_required: bool = Field(description="The latest build includes such a person: its "
                                   "next download is refused (409 `rebuild_required`) until "
                                   "the requester or a steward rebuilds.")
    builds: list[RecalledBuildOut]
