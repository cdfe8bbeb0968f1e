"""The accounting of disclosures (which extracts included a person) and the request
turnaround report.

Owns: who may read a person's disclosures (a steward, or an agency with a record linked to the
person), finding them through the person's key lineage (the key, the keys it forwards to, and
every key forwarding into those), and the turnaround figures (median and 90th percentile from
request to decision and from approval to first delivery). A disclosure is a build that was
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
    from mpi.registry import Registry

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


def disclosures(registry: Registry, principal: Principal, person_key: str) -> dict[str, Any]:
    """Every delivered extract that included the person (audited; the caller audits refusals)."""
    cur = registry.store.cursor()
    if principal.role not in ("agency", STEWARD):
        raise Forbidden("only a steward or a linked agency reads disclosures")
    if pstore.find_person(cur, person_key) is None:
        raise NotFound("no such person key")
    family = xstore.key_family(cur, person_key)
    if principal.role == "agency" and not (principal.agency and xstore.has_key_records_at(
            cur, family, agency=principal.agency)):
        raise NotFound("no such person key among this agency's records")
    out = []
    for d in xstore.delivered_disclosures(cur, family):
        row = xstore.find_request(cur, d["extract_id"])
        if row is None:
            continue
        who = prstore.find_principal(cur, row["requester_id"]) or {}
        spec = json.loads(row["spec"])
        out.append({"extract_id": row["extract_id"], "project": row["title"],
                    "purpose": row["purpose"], "agreement_ref": row["agreement_ref"],
                    "recipient": {"principal_id": row["requester_id"], "name": who.get("name")},
                    "disclosed_at": d["first_delivered_at"], "builds": d["builds"],
                    "kind": row["kind"],
                    "attributes": [{k: a[k] for k in ("agency", "dataset", "name", "generalization")}
                                   for a in spec["attributes"] if a["generalization"] != "suppress"]})
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
