"""Person-level research consent: an opt-out or opt-in recorded for a person, with provenance.

Owns: who may record and read a person's consent, the rules of scope and lifting, and the
audit of every change and refusal (Decision 79,
docs/decisions/0079-person-level-consent-and-recall.md).

- An entry is ``opt_out`` or ``opt_in`` with its source agency, the date the person expressed
  it, a reason (required for ``opt_in``) and the recording principal. Entries are never changed
  or deleted; the latest entry per *scope* decides (a scope is the source agency, or the
  steward's own scope when a steward names none).
- An agency records and reads only in its own scope, and only for a person it holds an active
  record of; any other key answers ``NotFound`` exactly as an unknown key does, so no route
  reveals that another agency holds a person. So an agency can never lift another agency's
  (or the steward's) opt-out. A steward may record in any scope (naming ``source_agency``) and
  sees every entry and whether the person is excluded from research.
- A person-level ``opt_in`` never lifts a record-level ``research_consent = false``; the agency
  changes that on its record.
- Entries follow the person through merges and splits (mpi/store/consent.py): an opt-out
  survives a merge; on a split every part keeps it.
- An opt-out that touches a delivered extract build adds an ``extracts.recall`` audit event per
  extract in the same transaction (the workflow then flags the extract and refuses its next
  download until it is rebuilt).

Must not: run SQL (mpi/store/consent.py), know about HTTP, or put a person key, a reason or
another agency's name into an audit event or error message.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from mpi.audit import AuditEntry, key_ref
from mpi.errors import Conflict, InvalidInput, NotFound, Problem
from mpi.identity.scoped_keys import NO_SUCH_PERSON, resolve
from mpi.principals import Principal
from mpi.store import consent as cstore
from mpi.store import extracts as xstore
from mpi.store import principals as prstore

if TYPE_CHECKING:
    from mpi.identity.registry import Registry

DECISIONS = ("opt_out", "opt_in")
STEWARD = "steward"
_EARLIEST = dt.date(1900, 1, 1)
_MAX_REASON = 2000


def _invalid(field: str, reason: str) -> InvalidInput:
    return InvalidInput(f"invalid consent: {field}", problems=[Problem(None, field, reason)])


def _check_reason(decision: str, reason: str | None) -> str | None:
    text = (reason or "").strip()
    if len(text) > _MAX_REASON or not text.isprintable():
        raise _invalid("reason", f"at most {_MAX_REASON} printable characters")
    if decision == "opt_in" and not text:
        raise _invalid("reason", "an opt-in needs a reason (its provenance)")
    return text or None


def _scopes(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The latest decision per scope, in the order the scopes first appear."""
    latest: dict[str | None, str] = {}
    for e in entries:  # oldest first: the last one wins
        latest[e["source_agency"]] = e["decision"]
    return [{"source_agency": a, "consent": d} for a, d in latest.items()]


def _entry_out(e: dict[str, Any]) -> dict[str, Any]:
    return {"decision": e["decision"], "source_agency": e["source_agency"],
            "date": e["effective_date"], "reason": e["reason"],
            "recorded_by": e["recorded_by"], "recorded_at": e["recorded_at"]}


class PersonConsent:
    """The consent use cases of one registry, called for a principal."""

    def __init__(self, registry: Registry) -> None:
        self._reg = registry

    def _resolve(self, principal: Principal, person_key: str) -> str:
        """The master key whose consent the principal may see: a steward any active key; an
        agency only a person it holds an active record of, named by its scoped key when it is
        scoped (Decision 72); NotFound otherwise, whatever the reason, so that the answer never
        tells it that someone else holds the person. A retired key is a Conflict (its
        successor carries the consent)."""
        cur = self._reg.store.cursor()
        if principal.role == "agency" and principal.agency:
            master = resolve(self._reg.key_scopes, cur, principal.agency, person_key)
        elif principal.role == STEWARD:
            master = person_key
        else:
            raise NotFound(NO_SUCH_PERSON)
        person = self._reg.get_person(master)
        if person["status"] != "active":
            raise Conflict("this person key is retired; record or read consent on its successor "
                           "(GET /v1/persons/{person_key} names it)")
        return master

    def _source(self, principal: Principal, source_agency: str | None) -> str | None:
        if principal.role == "agency":
            if source_agency not in (None, principal.agency):
                raise _invalid("source_agency", "an agency records consent in its own name only")
            return principal.agency
        if source_agency is not None and not prstore.agency_exists(self._reg.store.cursor(),
                                                                   source_agency):
            raise _invalid("source_agency", "no such agency")
        return source_agency

    def record(self, principal: Principal, person_key: str, *, decision: str,
               reason: str | None = None, date: dt.date | None = None,
               source_agency: str | None = None) -> dict[str, Any]:
        """Record an opt-out or opt-in for a person (audited, refusals too); the person's
        consent as the principal sees it afterwards."""
        target = key_ref(person_key)
        action = "persons.consent"
        with self._reg.refusals_audited(principal.principal_id, action, target):
            if decision not in DECISIONS:
                raise _invalid("decision", "must be opt_out or opt_in")
            text = _check_reason(decision, reason)
            today = self._reg.clock().date()
            when = date or today
            if not _EARLIEST <= when <= today:
                raise _invalid("date", "the date the person expressed it: not in the future, "
                               "not before 1900")
            master = self._resolve(principal, person_key)
            source = self._source(principal, source_agency)
            with self._reg.store.write_lock:
                cur = self._reg.store.cursor()
                before = [e for e in cstore.entries_for(cur, master)
                          if e["source_agency"] == source]
                lifted = decision == "opt_in" and bool(before) \
                    and before[-1]["decision"] == "opt_out"
                entries = [AuditEntry(principal.principal_id, action, target, detail={
                    "decision": decision, "scope": "agency" if source else STEWARD,
                    "lifts_opt_out": lifted})]
                if decision == "opt_out":
                    entries += self._recalls(principal, master)
                with self._reg.audited_transaction(entries) as tx:
                    cstore.insert_entry(tx, person_key=master, decision=decision,
                                        source_agency=source, effective_date=when, reason=text,
                                        recorded_by=principal.principal_id,
                                        now=self._reg.clock())
        return self._view(principal, master, shown=person_key)

    def _recalls(self, principal: Principal, person_key: str) -> list[AuditEntry]:
        """One ``extracts.recall`` event per extract with a delivered build that included the
        person (under this key or one that led to it)."""
        cur = self._reg.store.cursor()
        keys = {person_key} | {f for f, _t, _at in xstore.lineage_into(cur, [person_key])}
        builds = xstore.delivered_builds(cur, sorted(keys))
        seen: dict[str, int] = {}
        for b in builds:
            seen[b["extract_id"]] = max(seen.get(b["extract_id"], 0), int(b["build_seq"]))
        return [AuditEntry(principal.principal_id, "extracts.recall", f"extract:{x}",
                           detail={"cause": "opt_out", "build_seq": seq})
                for x, seq in sorted(seen.items())]

    def read(self, principal: Principal, person_key: str) -> dict[str, Any]:
        """The person's consent as the principal may see it (audited, refusals too)."""
        target = key_ref(person_key)
        with self._reg.refusals_audited(principal.principal_id, "persons.consent.read", target):
            master = self._resolve(principal, person_key)
        self._reg.record_audit([AuditEntry(principal.principal_id, "persons.consent.read",
                                           target)])
        return self._view(principal, master, shown=person_key)

    def _view(self, principal: Principal, master: str, *, shown: str) -> dict[str, Any]:
        """The consent of ``master`` as the principal sees it, under the key it used."""
        cur = self._reg.store.cursor()
        entries = cstore.entries_for(cur, master)
        if principal.role == "agency":
            own = [e for e in entries if e["source_agency"] == principal.agency]
            return {"person_key": shown, "entries": [_entry_out(e) for e in own],
                    "scopes": _scopes(own), "excluded_from_research": None,
                    "record_level_opt_out": None}
        scopes = _scopes(entries)
        record_level = cstore.record_opted_out(cur, master)
        return {"person_key": shown, "entries": [_entry_out(e) for e in entries],
                "scopes": scopes, "record_level_opt_out": record_level,
                "excluded_from_research": record_level
                or any(s["consent"] == "opt_out" for s in scopes)}
