"""The rows a key decision adds to a write batch: person rows, key events, lineage, review items.

Owns: the shape of those rows and taking their sequence numbers from the match state, for
every writer (enrol, withdraw, re-link, promote, steward merge and split). Must not: write to
the store or change who is who (``state`` does; the use cases decide).
"""

from __future__ import annotations

from typing import Any

from mpi.identity import keys as keyrules
from mpi.identity.results import WriteBatch
from mpi.identity.state import MatchState
from mpi.linkage.params import probability


def event(state: MatchState, batch: WriteBatch, key: str, kind: str, *, cause: str,
          model_version: str, related: str | None = None, record_seq: int | None = None) -> int:
    """Add a key event to ``batch``; its event_seq."""
    seq = state.next_event_seq()
    batch.events.append({"event_seq": seq, "person_key": key, "event_type": kind,
                         "cause": cause, "model_version": model_version, "related_key": related,
                         "record_seq": record_seq, "occurred_at": batch.now})
    return seq


def person_row(state: MatchState, batch: WriteBatch, key: str, *, cause: str, model_version: str,
               record_seq: int | None = None, split_from: str | None = None) -> None:
    """Add the person row of a new key: a plain mint event lives on the row (one write fewer
    on the online path); a key split off another gets an ordinary ``split`` event."""
    row: dict[str, Any] = {"person_key": key}
    if split_from is not None:
        event(state, batch, key, "split", cause=cause, model_version=model_version,
              related=split_from, record_seq=record_seq)
    else:
        row.update(minted_event_seq=state.next_event_seq(), minted_cause=cause,
                   minted_model_version=model_version, minted_record_seq=record_seq)
    batch.person_rows.append(row)


def mint(state: MatchState, batch: WriteBatch, *, cause: str, model_version: str,
         record_seq: int | None) -> int:
    """Mint a new key for one record, with its person row; its label."""
    key = keyrules.mint_key()
    person_row(state, batch, key, cause=cause, model_version=model_version, record_seq=record_seq)
    return state.add_person(key)


def retire(state: MatchState, batch: WriteBatch, key: str, *, successor: str | None, cause: str,
           model_version: str, record_seq: int | None = None) -> None:
    """Retire a key (into ``successor`` when it has one, with a merge lineage row)."""
    batch.retired.append(key)
    ev = event(state, batch, key, "retired", cause=cause, model_version=model_version,
               related=successor, record_seq=record_seq)
    if successor is not None:
        batch.lineage.append({"from_key": key, "to_key": successor, "kind": "merge",
                              "event_seq": ev})


def review_item(state: MatchState, batch: WriteBatch, kind: str, *, record_seq: int | None,
                person_key: str, other_key: str | None, weight: float, model_version: str) -> None:
    """Add an open review item (``record_person`` or ``possible_duplicate``)."""
    batch.reviews.append({
        "item_seq": state.next_item_seq(), "kind": kind, "record_seq": record_seq,
        "person_key": person_key, "other_person_key": other_key, "match_weight": weight,
        "match_probability": probability(weight), "status": "open",
        "model_version": model_version, "created_at": batch.now})
