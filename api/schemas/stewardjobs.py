"""Wire schemas of the steward's long actions run as jobs (re-link, keys export).

Owns: ``LinkIn``. Must not: hold logic.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LinkIn(BaseModel):
    """Options of a re-link."""

    model_config = ConfigDict(extra="forbid")

    engine: Literal["duckdb", "spark"] = Field(
        "duckdb", description="`duckdb` (in the service's process) or `spark` (the service's "
        "Spark settings, `local[*]` by default).")
