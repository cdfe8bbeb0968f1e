"""Wire schemas of a person key's lineage graph (merges and splits).

Owns: ``LineageOut`` and its parts. Must not: hold logic.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field


class LineageKey(BaseModel):
    """A key on the graph."""

    person_key: str
    status: str = Field(description="`active`, `retired` (or `unknown` for a dangling edge).")
    generation: int = Field(description="Steps from the asked key: negative for its ancestry "
                            "(keys merged or split into it), 0 for the key itself, positive "
                            "for its descendants (keys it was merged or split into).")
    created_at: dt.datetime | None
    retired_at: dt.datetime | None


class LineageEvent(BaseModel):
    """An edge: ``from_key`` passed records on to ``to_key``."""

    side: Literal["ancestry", "descendants"]
    kind: str = Field(description="`merge` (from_key retired into to_key), `split` (to_key "
                      "split off from_key) or `moved` (records moved without retiring).")
    from_key: str
    to_key: str
    event_type: str | None = Field(description="The key event recorded with the edge, e.g. "
                                   "`retired`, `records_merge`, `records_split`.")
    cause: str | None = Field(description="Why: `merge`, `split`, `review`, `relink`, ...")
    model_version: str | None
    occurred_at: dt.datetime | None


class LineageOut(BaseModel):
    """A person key's lineage graph."""

    person_key: str
    status: str
    nodes: list[LineageKey]
    events: list[LineageEvent] = Field(description="Oldest first.")
    truncated: bool = Field(description="True when more than 500 edges exist; the oldest 500 "
                            "are shown.")
