"""The human behind a principal, and separation of duties by human (Decision 80).

Owns: the ``human_email`` a principal of a human role carries (checked and put in canonical
form), the rule that one human holds at most one active principal (admin cannot give the same
address to a second one), and the rule that one human acts in only one capacity on a request:
the requester's human never approves it, and no human approves it twice (as an agency approver
and as the steward, even through two principals or one revoked since). A principal without a
human identity may not approve. Must not: run SQL (mpi/store/humans.py), know about HTTP, or
put an address in an audit event or error message.

The canonical form (``human_id``) is the address case-folded with any ``+tag`` dropped from
its local part, so ``Alice+irb@Example.org`` and ``alice@example.org`` are one human. It is
the admin's attestation, no stronger than the admin's identity proofing.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

import duckdb

from mpi.errors import Conflict, Forbidden, InvalidInput, Problem
from mpi.store import humans as hstore

HUMAN_ROLES = frozenset({"steward", "approver", "researcher", "auditor", "admin"})
"""Roles held by a person (``agency`` principals are the agencies' systems)."""
_EMAIL = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+$")
_MAX = 254


def _invalid(reason: str) -> InvalidInput:
    return InvalidInput("invalid human_email", problems=[Problem(None, "human_email", reason)])


def canonical(email: str) -> tuple[str, str]:
    """(the address as stored, lower case; the ``human_id`` compared); InvalidInput naming
    ``human_email`` when it is not an address."""
    address = email.strip().casefold()
    if len(address) > _MAX or not address.isprintable() or not _EMAIL.match(address):
        raise _invalid("an e-mail address (local@domain.tld), at most 254 characters")
    local, domain = address.rsplit("@", 1)
    return address, f"{local.split('+', 1)[0]}@{domain}"


def check_for_role(role: str, human_email: str | None, *, required: bool) -> None:
    """A human role needs an address (when ``required``); an agency principal takes none."""
    if role in HUMAN_ROLES and required and not human_email:
        raise _invalid(f"required for role {role}: the person who will hold this key")
    if role not in HUMAN_ROLES and human_email:
        raise _invalid(f"role {role} is an agency's system, not a person")


def assign(cur: duckdb.DuckDBPyConnection, *, principal_id: str, human_email: str,
           set_by: str, now: dt.datetime) -> None:
    """Give a principal its human (inside the caller's transaction, under the write lock);
    Conflict when the principal has one already or another active principal holds it."""
    address, human_id = canonical(human_email)
    if hstore.humans_of(cur, [principal_id]):
        raise Conflict("this principal's human_email is set already; it is set once")
    if [p for p in hstore.active_holders(cur, human_id) if p != principal_id]:
        raise Conflict("another active principal belongs to this human (one person, one "
                       "principal); revoke it first")
    hstore.insert_human(cur, principal_id=principal_id, human_email=address, human_id=human_id,
                        set_by=set_by, now=now)


def check_one_capacity(cur: duckdb.DuckDBPyConnection, *, approver_id: str, requester_id: str,
                       earlier_ids: Sequence[str]) -> None:
    """Forbidden unless the approver has a human who is neither the requester's nor that of
    anyone who has already decided on the request."""
    humans = hstore.humans_of(cur, [approver_id, requester_id, *earlier_ids])
    mine = humans.get(approver_id)
    if mine is None:
        raise Forbidden("a principal without a human_email may not decide on a request; an "
                        "admin sets it (PUT /v1/principals/{principal_id}/human)")
    if humans.get(requester_id) == mine:
        raise Forbidden("the requester and an approver may not be the same person "
                        "(same human_email)")
    if any(humans.get(p) == mine for p in earlier_ids if p != approver_id):
        raise Forbidden("one person acts in one capacity on a request: this human has already "
                        "decided on it (same human_email)")
