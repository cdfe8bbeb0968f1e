"""The accounting of disclosures (which extracts included a person) and the request
turnaround report.

Owns: who may read a person's disclosures (a steward: all; an agency with a record linked to
the person: those that released its own data), finding them through the person's key lineage
(the keys the person holds now, and every key whose records moved into those, for its builds
before the move), and the turnaround figures (median and 90th percentile from request to
decision and from approval to first delivery). A disclosure is a build that was
delivered (downloaded) at least once (README Decision 23). Must not: run SQL
(mpi/store/extracts.py), know about HTTP, or name a person key in an audit event (digests only).
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
from typing import TYPE_CHECKING, Any

from mpi.audit import AuditEntry, key_ref
from mpi.errors import Forbidden, NotFound
from mpi.principals import Principal
from mpi.store import extracts as xstore
from mpi.store import persons as pstore
from mpi.store import principals as prstore

if TYPE_CHECKING:
    from mpi.identity.registry import Registry

STEWARD = "steward"
NOTES = ("decision: the final approval or the first denial (a request closed while pending "
         "counts from its close)",
         "delivery: the first download of the extract by the researcher",
         "percentiles interpolate linearly between order statistics")


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between order statistics."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def released_attributes(kind: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The attributes an extract released: every one not suppressed in rows; in an aggregate
    only the dimensions counted by and the demographics its linkage report groups by."""
    shown = set(spec.get("dimensions") or []) | set(spec.get("demographics") or [])
    return [{k: a[k] for k in ("agency", "dataset", "name", "generalization")}
            for a in spec["attributes"] if a["generalization"] != "suppress"
            and (kind != "aggregate" or f"{a['agency']}.{a['name']}" in shown)]


def current_keys(registry: Registry, person_key: str) -> list[str]:
    """The active key(s) the person is known by now: the key itself, or a retired key's active
    successors (the key itself when it has none); NotFound for an unknown key."""
    cur = registry.store.cursor()
    row = pstore.find_person(cur, person_key)
    if row is None:
        raise NotFound("no such person key")
    if row["status"] == "active":
        return [person_key]
    return pstore.active_successors(cur, person_key) or [person_key]


def windows(current: list[str], edges: list[tuple[str, str, dt.datetime | None]]
            ) -> dict[str, dt.datetime | None]:
    """For each key whose builds concern the person: builds before this time count (None: any
    time). A current key counts always; a key whose records moved into a counting key at time t
    (merge, split or move) counts for its builds before t, and before its successor's own bound;
    an edge at or after that bound moved records that were not the person's then."""
    bound: dict[str, dt.datetime | None] = dict.fromkeys(current)
    changed = True
    while changed:
        changed = False
        for frm, to, at in edges:
            if to not in bound:
                continue
            hi = bound[to]
            if at is not None and hi is not None and at >= hi:
                continue
            new = hi if at is None else at if hi is None else min(hi, at)
            if frm not in bound:
                bound[frm], changed = new, True
                continue
            old = bound[frm]
            if old is not None and (new is None or new > old):
                bound[frm], changed = new, True
    return bound


def _concerns(agency: str, spec: dict[str, Any], released: list[dict[str, Any]]) -> bool:
    """Whether an extract released the agency's own data: its cohort, or its attributes."""
    cohort = spec.get("cohort") or {}
    return cohort.get("agency") == agency or any(a["agency"] == agency for a in released)


def disclosures(registry: Registry, principal: Principal, person_key: str) -> dict[str, Any]:
    """Every delivered extract that included the person (audited; the caller audits refusals).

    The person is who the key stands for now (``current_keys``). Their disclosures are the
    delivered builds of a current key, and of every key whose records moved into theirs,
    from before the move (``windows``): after a split, each side keeps the history before it
    and only its own builds after it (Decision 46). An agency may read them only with an
    active record linked to the person now, and sees only the extracts that released its own
    data about the person (its cohort or its attributes), with only its own attributes listed:
    never another agency's projects, which would tell it who else holds the person."""
    cur = registry.store.cursor()
    if principal.role not in ("agency", STEWARD):
        raise Forbidden("only a steward or a linked agency reads disclosures")
    current = current_keys(registry, person_key)
    if principal.role == "agency" and not (principal.agency and xstore.has_key_records_at(
            cur, current, agency=principal.agency)):
        raise NotFound("no such person key")  # the same answer as an unknown key
    bound = windows(current, xstore.lineage_into(cur, current))
    found: dict[str, dict[str, Any]] = {}
    for b in xstore.delivered_builds(cur, sorted(bound)):
        hi = bound[b["person_key"]]
        if hi is not None and b["built_at"] >= hi:
            continue
        d = found.setdefault(b["extract_id"], {"first_delivered_at": b["first_delivered_at"],
                                                "builds": set()})
        d["first_delivered_at"] = min(d["first_delivered_at"], b["first_delivered_at"])
        d["builds"].add(int(b["build_seq"]))
    out = []
    for extract_id, d in sorted(found.items(), key=lambda kv: (kv[1]["first_delivered_at"], kv[0])):
        row = xstore.find_request(cur, extract_id)
        if row is None:
            continue
        who = prstore.find_principal(cur, row["requester_id"]) or {}
        spec = json.loads(row["spec"])
        released = released_attributes(row["kind"], spec)
        if principal.role == "agency":  # only what released this agency's own data about them
            if not _concerns(principal.agency or "", spec, released):
                continue
            released = [a for a in released if a["agency"] == principal.agency]
        out.append({"extract_id": row["extract_id"], "project": row["title"],
                    "purpose": row["purpose"], "agreement_ref": row["agreement_ref"],
                    "recipient": {"principal_id": row["requester_id"], "name": who.get("name")},
                    "disclosed_at": d["first_delivered_at"], "builds": sorted(d["builds"]),
                    "kind": row["kind"], "attributes": released})
    registry.record_audit([AuditEntry(principal.principal_id, "persons.disclosures",
                                      key_ref(person_key), detail={"extracts": len(out)})])
    return {"person_key": person_key, "disclosures": out}


def _spread(pairs: list[tuple[dt.datetime, dt.datetime]]) -> dict[str, Any]:
    hours = [(b - a).total_seconds() / 3600 for a, b in pairs]
    return {"count": len(hours), "median_hours": statistics.median(hours) if hours else None,
            "p90_hours": percentile(hours, 90)}


def request_report(registry: Registry, principal: Principal) -> dict[str, Any]:
    """Turnaround: median and 90th percentile request -> decision and approval -> delivery."""
    rows = xstore.request_times(registry.store.cursor())
    decided = [(r["created_at"], r["decided_at"]) for r in rows
               if r["decided_at"] is not None and r["status"] in ("approved", "denied", "closed")]
    delivered = [(r["approved_at"], r["delivered_at"]) for r in rows
                 if r["approved_at"] is not None and r["delivered_at"] is not None]
    by_status: dict[str, int] = {}
    for r in rows:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    registry.record_audit([AuditEntry(principal.principal_id, "reports.requests", "extracts")])
    return {"requests": len(rows), "by_status": by_status,
            "request_to_decision": _spread(decided), "approval_to_delivery": _spread(delivered),
            "notes": list(NOTES)}
