"""A person key's lineage: the merges and splits that led to it and came of it.

Owns: the steward's audited read of a key's ancestry (keys retired into it or split off into
it, over any number of steps) and descendants (what it was merged into or split into), each
edge with its key event (kind, cause, model version, time), and every key on the graph with
its status and generation (ancestors negative, the key 0, descendants positive). Must not:
run SQL (mpi/store/lineage.py does), change keys, or show a record's tokens.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from mpi.audit import AuditEntry, key_ref
from mpi.errors import NotFound
from mpi.store import lineage as lstore

if TYPE_CHECKING:
    from mpi.identity.registry import Registry

MAX_EDGES = 500


def person_lineage(reg: Registry, person_key: str, *, principal: str,
                   max_edges: int = MAX_EDGES) -> dict[str, Any]:
    """The lineage graph around ``person_key`` (audited as ``persons.lineage``); NotFound for
    an unknown key. At most ``max_edges`` edges, oldest first (``truncated`` says so)."""
    target = key_ref(person_key)
    with reg.refusals_audited(principal, "persons.lineage", target):
        cur = reg.store.cursor()
        statuses = lstore.key_statuses(cur, [person_key])
        if person_key not in statuses:
            raise NotFound("no such person key")
        edges = lstore.lineage_edges(cur, person_key, limit=max_edges + 1)
        truncated = len(edges) > max_edges
        edges = edges[:max_edges]
        keys = sorted({e["from_key"] for e in edges} | {e["to_key"] for e in edges}
                      | {person_key})
        statuses = lstore.key_statuses(cur, keys)
    reg.record_audit([AuditEntry(principal, "persons.lineage", target,
                                 detail={"edges": len(edges)})])
    gen = generations(person_key, edges)
    nodes = [{"person_key": k, "generation": gen.get(k, 0),
              **statuses.get(k, {"status": "unknown", "created_at": None, "retired_at": None})}
             for k in keys]
    nodes.sort(key=lambda n: (n["generation"], n["created_at"] is None, n["created_at"] or 0,
                              n["person_key"]))
    return {"person_key": person_key, "status": statuses[person_key]["status"],
            "nodes": nodes,
            "events": [{k: e[k] for k in ("side", "kind", "from_key", "to_key", "event_type",
                                          "cause", "model_version", "occurred_at")}
                       for e in edges],
            "truncated": truncated}


def generations(person_key: str, edges: list[dict[str, Any]]) -> dict[str, int]:
    """Each key's step count from ``person_key``: negative along ancestry edges (backward),
    positive along descendant edges (forward); the shortest walk wins."""
    back: dict[str, list[str]] = {}
    fwd: dict[str, list[str]] = {}
    for e in edges:
        if e["side"] == "ancestry":
            back.setdefault(e["to_key"], []).append(e["from_key"])
        else:
            fwd.setdefault(e["from_key"], []).append(e["to_key"])
    gen = {person_key: 0}
    for links, step in ((back, -1), (fwd, 1)):
        todo = deque([person_key])
        while todo:
            k = todo.popleft()
            for nxt in links.get(k, []):
                if nxt not in gen:
                    gen[nxt] = gen[k] + step
                    todo.append(nxt)
    return gen
