"""A steward signs a dictionary attribute off as non-identifying, or revokes that (Decision 94).

Owns: the two steward use cases ``sign_off`` and ``revoke_sign_off``. A sign-off takes an
``other`` attribute out of the quasi-identifiers of rows extracts (mpi/extract/protect.py); it
is the steward's own record (principal, its human identity, reason, time), never a field the
agency writes, refused for dates, ZIPs, ages and birth fields (``hierarchy.identifying_kind``)
and for any class but ``other``, honoured only while the entry keeps the type and class it was
signed off under, and audited with refusals. Must not: run SQL (mpi/store/signoffs.py does),
know about HTTP, or put a human's address in an audit event or message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mpi.audit import AuditEntry
from mpi.errors import Forbidden, InvalidInput, MpiError, NotFound, Problem
from mpi.extract.datasets import dictionary_entries
from mpi.extract.hierarchy import identifying_kind
from mpi.principals import Principal
from mpi.store import humans as hstore
from mpi.store import signoffs as sstore

if TYPE_CHECKING:
    from mpi.identity.registry import Registry

MAX_REASON = 2000


def _reason(reason: Any) -> str:
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise InvalidInput("a reason is required", problems=[Problem(
            None, "reason", f"1-{MAX_REASON} characters: why this attribute does not identify")])
    return reason.strip()


def _steward_human(registry: Registry, principal: Principal) -> str:
    """The human identity of a steward principal (a sign-off is a person's attestation)."""
    if principal.role != "steward":
        raise Forbidden("only a steward signs attributes off as non-identifying")
    human = hstore.humans_of(registry.store.cursor(), [principal.principal_id])
    if principal.principal_id not in human:
        raise Forbidden("this steward principal has no human_email; an admin must set it "
                        "before it can sign anything off")
    return human[principal.principal_id]


def _entry(registry: Registry, agency: str, dataset: str, attribute: str) -> dict[str, Any]:
    entry = dictionary_entries(registry).get((agency, dataset, attribute))
    if entry is None:
        raise NotFound("no data dictionary entry for this agency, dataset and attribute")
    return entry


def sign_off(registry: Registry, principal: Principal, *, agency: str, dataset: str,
             attribute: str, reason: Any) -> dict[str, Any]:
    """Record the caller steward's sign-off of one ``other`` attribute (audited; refusals too)."""
    target = f"dataset:{agency}/{dataset}/{attribute}"
    try:
        human = _steward_human(registry, principal)
        why = _reason(reason)
        entry = _entry(registry, agency, dataset, attribute)
        if identifying_kind(attribute, entry["type"]):
            raise InvalidInput("identifying fields cannot be signed off", problems=[Problem(
                None, "attribute", f"{attribute!r} is a date, ZIP, age or birth field: it "
                "identifies people and is always a quasi-identifier")])
        if entry["class"] != "other":
            raise InvalidInput("only class other can be signed off", problems=[Problem(
                None, "attribute", f"{attribute!r} is class {entry['class']}: quasi-identifiers "
                "and sensitive attributes are protected as such, not signed off")])
    except MpiError as exc:
        outcome = "denied" if isinstance(exc, Forbidden) else "invalid"
        registry.record_audit([AuditEntry(principal.principal_id, "datasets.sign_off", target,
                                          outcome)])
        raise
    audit = AuditEntry(principal.principal_id, "datasets.sign_off", target,
                       detail={"type": entry["type"], "class": entry["class"]})
    with registry.audited_transaction([audit]) as cur:
        sstore.put_sign_off(cur, agency=agency, dataset=dataset, name=attribute,
                            type_=entry["type"], klass=entry["class"],
                            signed_by=principal.principal_id, signed_by_human=human,
                            reason=why, now=registry.clock())
    return _entry(registry, agency, dataset, attribute)


def revoke_sign_off(registry: Registry, principal: Principal, *, agency: str, dataset: str,
                    attribute: str, reason: Any) -> dict[str, Any]:
    """Withdraw an attribute's sign-off (any steward; audited, refusals too): from now on it
    is a quasi-identifier again, also in builds of requests approved before."""
    target = f"dataset:{agency}/{dataset}/{attribute}"
    try:
        _steward_human(registry, principal)
        why = _reason(reason)
        _entry(registry, agency, dataset, attribute)
        found = sstore.find_sign_off(registry.store.cursor(), agency=agency, dataset=dataset,
                                     name=attribute)
        if found is None:
            raise NotFound("this attribute is not signed off")
    except MpiError as exc:
        outcome = "denied" if isinstance(exc, Forbidden) else "invalid"
        registry.record_audit([AuditEntry(principal.principal_id, "datasets.sign_off_revoke",
                                          target, outcome)])
        raise
    audit = AuditEntry(principal.principal_id, "datasets.sign_off_revoke", target,
                       detail={"signed_off_by": found["signed_by"], "reason_given": bool(why)})
    with registry.audited_transaction([audit]) as cur:
        sstore.delete_sign_off(cur, agency=agency, dataset=dataset, name=attribute)
    return _entry(registry, agency, dataset, attribute)
