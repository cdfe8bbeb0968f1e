"""The recall flag of a research extract: delivered packages that include a person who has
opted out since (Decision 79, docs/decisions/0079-person-level-consent-and-recall.md).

Owns: what ``GET /v1/extracts/{id}`` shows its researcher, approvers and stewards about opt-outs
after delivery: per delivered build, how many of its persons are opted out now (counts only,
never a person), and whether the latest build must be rebuilt before its next download (the
workflow refuses that download with ``RebuildRequired``). Must not: run SQL
(mpi/store/consent.py, mpi/store/extracts_read.py), name a person, or change anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import duckdb

from mpi.store import consent as cstore
from mpi.store import extracts_read as xread


def recall_status(cur: duckdb.DuckDBPyConnection, row: Mapping[str, Any],
                  latest_build: Mapping[str, Any] | None) -> dict[str, Any]:
    """``flagged`` (a delivered build includes a person opted out since), ``builds`` (those
    builds: ``build_seq``, ``first_delivered_at``, ``opted_out_persons``) and
    ``rebuild_required`` (the latest build of an approved extract includes one)."""
    builds: list[dict[str, Any]] = []
    if row["delivered_at"] is not None:
        builds = [b for b in cstore.delivered_opted_out(cur, str(row["extract_id"]))
                  if b["opted_out_persons"] > 0]
    rebuild = False
    if row["status"] == "approved" and latest_build is not None:
        seq = int(latest_build["build_seq"])
        rebuild = any(b["build_seq"] == seq for b in builds) or xread.build_has_opted_out(
            cur, extract_id=str(row["extract_id"]), build_seq=seq)
    return {"flagged": bool(builds), "rebuild_required": rebuild, "builds": builds}


def refusal_message() -> str:
    """The detail of the 409 a download gets while a rebuild is required."""
    return ("rebuild required: a person in this build has opted out of research since it was "
            "built; the requester or a steward rebuilds the extract (POST .../build)")
