"""Records and persons as a principal sees them: agency scoping, audit events, all-or-none.

Owns: the use cases the API calls on behalf of an authenticated principal: an agency reads and
changes only its own records, sees only its own records on a person, batches are stored all or
none, idempotent replays, and an audit event for every read, change and refusal (changes in
the same transaction). Which role may call which use case is the API's policy table. Must not:
run SQL, know about HTTP, or put a token or raw person key in an audit event. An agency with
agency-scoped keys is told only its scoped keys, and nothing that says another agency holds a
person (mpi/identity/scoped_keys.py, Decision 72).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from mpi.audit import AuditEntry, key_ref
from mpi.errors import InvalidInput, MpiError, NotFound, Problem, audit_outcome
from mpi.identity.idempotency import IdempotencyKeys, request_hash
from mpi.identity.registry import EnrolResult, RecordResult, Registry
from mpi.identity.scoped_keys import held_counts, resolve
from mpi.principals import Principal, Principals

_MATCH_SID = "match"
_SCOPED_SCAN = 1000  # candidates a scoped agency's match looks through for persons it holds


def _result(r: RecordResult) -> dict[str, Any]:
    return {"source_record_id": r.source_record_id, "person_key": r.person_key,
            "outcome": r.outcome}


def _sorted(problems: Sequence[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.row or 0, p.field or ""))


class Access:
    """The use cases of one registry, called for a principal."""

    def __init__(self, registry: Registry, *,
                 on_ingest: Callable[[dict[str, int]], None] | None = None) -> None:
        self.registry = registry
        self._on_ingest = on_ingest
        self.principals = Principals(registry)
        self.idempotency = IdempotencyKeys(registry)

    # ---- audit helpers ----------------------------------------------------------------
    def audit(self, principal_id: str, action: str, target: str, *, outcome: str = "ok",
              detail: dict[str, Any] | None = None) -> None:
        """Append one audit event on its own (reads and refusals)."""
        self.registry.record_audit([AuditEntry(principal_id, action, target, outcome, detail)])

    def _agency_of(self, principal: Principal, agency: str | None = None) -> str:
        if principal.role == "agency" and principal.agency:
            return principal.agency
        if agency:
            return agency
        raise InvalidInput("agency required", problems=[Problem(
            None, "agency", "required for this role (query parameter)")])

    # ---- agency-scoped keys (Decision 72) ------------------------------------------------
    def _scoped(self, principal: Principal) -> str | None:
        """The caller's agency when it sees agency-scoped keys, else None."""
        agency = principal.agency if principal.role == "agency" else None
        return agency if self.registry.key_scopes.is_scoped(agency) else None

    def _held(self, agency: str) -> Callable[[list[str]], dict[str, int]]:
        return lambda keys: held_counts(self.registry, agency, keys)

    def _view(self, principal: Principal, res: EnrolResult) -> EnrolResult:
        """The results as the caller may see them (scoped keys and outcomes when scoped)."""
        agency = self._scoped(principal)
        if agency is None:
            return res
        return EnrolResult(self.registry.key_scopes.view_results(agency, res.results,
                                                                 self._held(agency)),
                           res.problems)

    # ---- records ----------------------------------------------------------------------
    def create_records(self, principal: Principal, records: list[dict[str, Any]], *,
                       idempotency_key: str | None = None) -> dict[str, Any]:
        """Validate a batch; store all of it or none; replay a known Idempotency-Key."""
        agency = self._agency_of(principal)
        target = f"agency:{agency}/records"
        limit = self.registry.settings.max_batch_records
        if len(records) > limit:
            raise InvalidInput(f"at most {limit} records per request", problems=[
                Problem(None, "records", f"{len(records)} records; the limit is {limit}")])
        if idempotency_key is None:
            return self._create(principal, agency, records)
        pid = principal.principal_id
        return self.idempotency.run(
            pid, idempotency_key, digest=request_hash(records),
            compute=lambda: self._create(principal, agency, records),
            on_replay=lambda: self.audit(pid, "records.create", target,
                                         detail={"idempotent_replay": True}),
            on_conflict=lambda: self.audit(pid, "records.create", target, outcome="invalid",
                                           detail={"idempotency_conflict": True}))

    def _create(self, principal: Principal, agency: str,
                records: list[dict[str, Any]]) -> dict[str, Any]:
        target = f"agency:{agency}/records"
        objects = list(enumerate(records, start=1))
        pid = principal.principal_id
        entry = AuditEntry(pid, "records.create", target, detail={"records": len(objects)})
        res = self.registry.enrol_records(agency, objects, audit=[entry], all_or_none=True,
                                          audit_rejected=[AuditEntry(
                                              pid, "records.create", target, outcome="invalid",
                                              detail={"records": len(objects)})])
        if res.problems:
            rows = len({p.row for p in res.problems})
            raise InvalidInput(f"{rows} of {len(objects)} records are invalid; none was stored",
                               problems=_sorted(res.problems))
        res = self._view(principal, res)
        self._count(res)
        return {"results": [_result(r) for r in sorted(res.results, key=lambda r: r.row)]}

    def read_record(self, principal: Principal, source_record_id: str, *,
                    agency: str | None = None) -> dict[str, Any]:
        """One of the agency's records (never its tokens) with its current person key."""
        agency = self._agency_of(principal, agency)
        target = f"agency:{agency}/records/{source_record_id}"
        try:
            row = self.registry.get_record(agency, source_record_id)
        except MpiError as exc:
            self.audit(principal.principal_id, "records.read", target, outcome=audit_outcome(exc))
            raise
        self.audit(principal.principal_id, "records.read", target)
        keep = ("agency", "source_record_id", "status", "version", "person_key",
                "research_consent", "attributes", "created_at", "updated_at")
        out = {k: row[k] for k in keep}
        scoped = self._scoped(principal)
        if scoped is not None and out["person_key"]:
            out["person_key"] = self.registry.key_scopes.to_agency(scoped, out["person_key"])
        out["attributes"] = json.loads(row["attributes"]) if row["attributes"] else None
        return out

    def replace_record(self, principal: Principal, source_record_id: str,
                       record: dict[str, Any]) -> dict[str, Any]:
        """Store a new version of one record (the path id wins; a different body id is refused)."""
        agency = self._agency_of(principal)
        target = f"agency:{agency}/records/{source_record_id}"
        body_sid = record.get("source_record_id")
        if body_sid is not None and body_sid != source_record_id:
            self.audit(principal.principal_id, "records.replace", target, outcome="invalid")
            raise InvalidInput("the body's source_record_id differs from the path", problems=[
                Problem(1, "source_record_id", "must equal the source_record_id in the path")])
        objects = [(1, {**record, "source_record_id": source_record_id})]
        pid = principal.principal_id
        res = self.registry.enrol_records(
            agency, objects, audit=[AuditEntry(pid, "records.replace", target)], all_or_none=True,
            audit_rejected=[AuditEntry(pid, "records.replace", target, outcome="invalid",
                                       detail={"records": 1})])
        if res.problems:
            raise InvalidInput("1 of 1 records is invalid; none was stored",
                               problems=_sorted(res.problems))
        res = self._view(principal, res)
        self._count(res)
        return _result(res.results[0])

    def withdraw_record(self, principal: Principal, source_record_id: str) -> dict[str, Any]:
        """Withdraw one of the agency's active records (kept as a tombstone)."""
        agency = self._agency_of(principal)
        target = f"agency:{agency}/records/{source_record_id}"
        try:
            row = self.registry.get_record(agency, source_record_id)
            if row["status"] != "active":
                raise NotFound("this record is already withdrawn")
        except MpiError as exc:
            self.audit(principal.principal_id, "records.withdraw", target, outcome=audit_outcome(exc))
            raise
        entry = AuditEntry(principal.principal_id, "records.withdraw", target)
        res = self.registry.withdraw_records(agency, [source_record_id], audit=[entry])
        if res.problems or not res.results:  # withdrawn concurrently
            raise NotFound("this record is already withdrawn")
        res = self._view(principal, res)
        self._count(res)
        return _result(res.results[0])

    def _count(self, res: EnrolResult) -> None:
        if self._on_ingest is not None:
            self._on_ingest(res.counts())

    # ---- matching and persons ---------------------------------------------------------
    def match(self, principal: Principal, record: dict[str, Any], *,
              limit: int = 10) -> dict[str, Any]:
        """Score a record against the registry without storing it; graded candidates. A scoped
        agency gets only persons it holds, by their scoped keys: a person held only by other
        agencies is no candidate."""
        target = f"agency:{principal.agency}/match" if principal.agency else "match"
        obj = {"source_record_id": _MATCH_SID, **record}
        scoped = self._scoped(principal)
        try:
            found = self.registry.match(obj, limit=limit if scoped is None else _SCOPED_SCAN)
            if scoped is not None:
                held = self._held(scoped)([c["person_key"] for c in found])
                found = [{**c, "person_key": self.registry.key_scopes.to_agency(
                    scoped, c["person_key"])} for c in found if c["person_key"] in held][:limit]
        except MpiError as exc:
            self.audit(principal.principal_id, "persons.match", target, outcome=audit_outcome(exc))
            raise
        self.audit(principal.principal_id, "persons.match", target,
                   detail={"candidates": len(found)})
        return {"candidates": [{k: c[k] for k in ("person_key", "match_probability", "grade")}
                               for c in found]}

    def read_person(self, principal: Principal, person_key: str) -> dict[str, Any]:
        """A person key's status, successors and the linked records the principal may see.

        An agency reads only a person it holds (an active record on the key or on a successor
        of a retired key), by its scoped key when it is scoped, and sees only its own records
        and the successors it holds; anything else is the same 404 as an unknown key."""
        agency = principal.agency if principal.role == "agency" else None
        target = key_ref(person_key)
        try:
            master = person_key if agency is None else resolve(
                self.registry.key_scopes, self.registry.store.cursor(), agency, person_key)
            person = self.registry.get_person(master, agency=agency)
        except MpiError as exc:
            self.audit(principal.principal_id, "persons.read", target, outcome=audit_outcome(exc))
            raise
        self.audit(principal.principal_id, "persons.read", target)
        successors = list(person["superseded_by"])
        if agency is not None:
            held = self._held(agency)(successors)
            successors = [k for k in successors if k in held]
        scoped = self._scoped(principal)
        if scoped is not None:
            successors = [self.registry.key_scopes.to_agency(scoped, k) for k in successors]
        return {"person_key": person_key, "status": person["status"],
                "superseded_by": successors,
                "records": [{"agency": a, "source_record_id": s} for a, s in person["records"]]}

    # ---- principals and agencies (admin reads are audited too) -------------------------
    def list_principals(self, principal: Principal) -> list[dict[str, Any]]:
        """Every principal (never a key)."""
        rows = self.principals.list_principals()
        self.audit(principal.principal_id, "principals.list", "principals")
        return rows

    def list_agencies(self, principal: Principal) -> list[dict[str, Any]]:
        """Every agency."""
        rows = self.principals.list_agencies()
        self.audit(principal.principal_id, "agencies.list", "agencies")
        return rows

    def _refusals_audited(self, principal: Principal, action: str,
                          target: str) -> AbstractContextManager[None]:
        return self.registry.refusals_audited(principal.principal_id, action, target)

    def create_agency(self, principal: Principal, agency: str, *,
                      key_scope: str = "shared") -> dict[str, Any]:
        """Register an agency with its key scope (audited, refusals too)."""
        with self._refusals_audited(principal, "agencies.create", f"agency:{agency}"):
            return self.principals.create_agency(agency, actor=principal.principal_id,
                                                 key_scope=key_scope)

    def update_agency(self, principal: Principal, agency: str, *,
                      key_scope: str) -> dict[str, Any]:
        """Change an agency's key scope (audited, refusals too)."""
        with self._refusals_audited(principal, "agencies.update", f"agency:{agency}"):
            return self.principals.update_agency(agency, actor=principal.principal_id,
                                                 key_scope=key_scope)

    def create_principal(self, principal: Principal, name: str, *, role: str,
                         agency: str | None,
                         human_email: str | None = None) -> tuple[dict[str, Any], str]:
        """Create a principal and its first key, shown once (audited, refusals too)."""
        with self._refusals_audited(principal, "principals.create", "principals"):
            return self.principals.create_principal(name, role=role, agency=agency,
                                                     actor=principal.principal_id,
                                                     human_email=human_email)

    def set_human(self, principal: Principal, principal_id: str,
                  human_email: str) -> dict[str, Any]:
        """Give a principal its human identity, once (audited, refusals too; Decision 80)."""
        with self._refusals_audited(principal, "principals.human", f"principal:{principal_id}"):
            return self.principals.set_human(principal_id, human_email,
                                             actor=principal.principal_id)

    def revoke_principal(self, principal: Principal, principal_id: str) -> dict[str, Any]:
        """Revoke a principal and its keys (audited, refusals too)."""
        with self._refusals_audited(principal, "principals.revoke", f"principal:{principal_id}"):
            return self.principals.revoke_principal(principal_id, actor=principal.principal_id)

    def rotate_key(self, principal: Principal, principal_id: str) -> tuple[dict[str, Any], str]:
        """Replace a principal's key, old one revoked at once (audited, refusals too)."""
        with self._refusals_audited(principal, "principals.rotate", f"principal:{principal_id}"):
            return self.principals.rotate_key(principal_id, actor=principal.principal_id)
