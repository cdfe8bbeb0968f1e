"""Principals, roles and API keys: who may call the service, and agencies they act for.

Owns: issuing API keys (256-bit random, shown once, stored only as SHA-256), authenticating
them (with an in-memory cache invalidated on revoke and rotate), revoking and rotating them,
registering agencies, and the first admin key of a fresh data directory. Every change appends
an audit event in the same transaction. Must not: run SQL (mpi/store/principals.py) or know
about HTTP.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from mpi import humans
from mpi.audit import AuditEntry
from mpi.errors import Conflict, InvalidInput, NotFound, Problem
from mpi.identity.scoped_keys import SHARED, check_scope
from mpi.store import principals as pstore

if TYPE_CHECKING:
    from mpi.identity.registry import Registry

ROLES = ("agency", "steward", "approver", "researcher", "auditor", "admin")
AGENCY_BOUND_ROLES = frozenset({"agency", "approver"})
KEY_PREFIX = "mpi_"
ADMIN_KEY_FILE = "admin.key"
_AGENCY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MAX_KEY_LEN = 128


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: its id, display name, role and (for some roles) agency."""

    principal_id: str
    name: str
    role: str
    agency: str | None = None


def hash_key(key: str) -> str:
    """The stored form of an API key: hex SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh API key: ``mpi_`` + 256 random bits, URL-safe base64."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _check_agency_name(agency: str) -> None:
    if not _AGENCY_RE.match(agency):
        raise InvalidInput("invalid agency name", problems=[Problem(
            None, "agency", "1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")])


class Principals:
    """The principals of one registry, with a cache of authenticated keys."""

    def __init__(self, registry: Registry) -> None:
        self._reg = registry
        self._cache: dict[str, Principal] = {}
        self._lock = threading.Lock()

    # ---- authentication ---------------------------------------------------------------
    def cached(self, key: str) -> Principal | None:
        """The principal holding this live key when it is already known in memory, else None
        (never touches the database, so it may run on the event loop)."""
        if not key.startswith(KEY_PREFIX) or len(key) > _MAX_KEY_LEN:
            return None
        return self._cache.get(hash_key(key))

    def authenticate(self, key: str) -> Principal | None:
        """The principal holding this live key, or None (unknown, malformed or revoked)."""
        found = self.cached(key)
        if found is not None or not key.startswith(KEY_PREFIX) or len(key) > _MAX_KEY_LEN:
            return found
        digest = hash_key(key)
        row = pstore.find_by_key_hash(self._reg.store.cursor(), digest)
        if row is None or row["key_revoked"]:
            return None
        principal = Principal(row["principal_id"], row["name"], row["role"], row["agency"])
        with self._lock:
            self._cache[digest] = principal
        return principal

    def find_revoked_holder(self, key: str) -> str | None:
        """The principal id a revoked key belonged to (to audit its use), or None."""
        if not key.startswith(KEY_PREFIX) or len(key) > _MAX_KEY_LEN:
            return None
        row = pstore.find_by_key_hash(self._reg.store.cursor(), hash_key(key))
        return str(row["principal_id"]) if row is not None and row["key_revoked"] else None

    def _forget(self, principal_id: str) -> None:
        with self._lock:
            for digest in [d for d, p in self._cache.items() if p.principal_id == principal_id]:
                del self._cache[digest]

    def _audited(self, entries: Sequence[AuditEntry]
                 ) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        return self._reg.audited_transaction(entries)

    # ---- agencies ---------------------------------------------------------------------
    def create_agency(self, agency: str, *, actor: str,
                      key_scope: str = SHARED) -> dict[str, Any]:
        """Register an agency with its key scope; Conflict when it exists."""
        _check_agency_name(agency)
        check_scope(key_scope)
        with self._audited([AuditEntry(actor, "agencies.create", f"agency:{agency}",
                                       detail={"key_scope": key_scope})]) as cur:
            now = self._reg.clock()
            if not pstore.insert_agency(cur, agency, now=now):
                raise Conflict("this agency already exists")
            pstore.set_key_scope(cur, agency, key_scope, now=now)
        self._reg.key_scopes.remember(agency, key_scope)
        return next(a for a in self.list_agencies() if a["agency"] == agency)

    def update_agency(self, agency: str, *, actor: str, key_scope: str) -> dict[str, Any]:
        """Change an agency's key scope; NotFound when it is not registered."""
        check_scope(key_scope)
        if not pstore.agency_exists(self._reg.store.cursor(), agency):
            raise NotFound("no such agency")
        with self._audited([AuditEntry(actor, "agencies.update", f"agency:{agency}",
                                       detail={"key_scope": key_scope})]) as cur:
            pstore.set_key_scope(cur, agency, key_scope, now=self._reg.clock())
        self._reg.key_scopes.remember(agency, key_scope)
        return next(a for a in self.list_agencies() if a["agency"] == agency)

    def list_agencies(self) -> list[dict[str, Any]]:
        """Every registered agency."""
        return pstore.list_agencies(self._reg.store.cursor())

    # ---- principals -------------------------------------------------------------------
    def create_principal(self, name: str, *, role: str, agency: str | None, actor: str,
                         human_email: str | None = None,
                         require_human: bool = True) -> tuple[dict[str, Any], str]:
        """Create a principal and its first key; returns (principal, key shown once). A human
        role needs ``human_email`` unless ``require_human`` is False (the first admin)."""
        if role in ROLES:
            humans.check_for_role(role, human_email, required=require_human)
        if human_email:
            humans.canonical(human_email)
        problems = []
        if role not in ROLES:
            problems.append(Problem(None, "role", f"must be one of {', '.join(ROLES)}"))
        if not name.strip() or len(name) > 100 or not name.isprintable():
            problems.append(Problem(None, "name", "1-100 printable characters"))
        if role in AGENCY_BOUND_ROLES and not agency:
            problems.append(Problem(None, "agency", f"required for role {role}"))
        if role not in AGENCY_BOUND_ROLES and agency:
            problems.append(Problem(None, "agency", f"role {role} is not bound to an agency"))
        if problems:
            raise InvalidInput("invalid principal", problems=problems)
        if agency and not pstore.agency_exists(self._reg.store.cursor(), agency):
            raise InvalidInput("unknown agency", problems=[
                Problem(None, "agency", "no such agency; create it first")])
        principal_id = "p_" + secrets.token_hex(8)
        key = new_key()
        entry = AuditEntry(actor, "principals.create", f"principal:{principal_id}",
                           detail={"role": role, "agency": agency})
        with self._audited([entry]) as cur:
            now = self._reg.clock()
            pstore.insert_principal(cur, principal_id=principal_id, name=name.strip(), role=role,
                                    agency=agency, now=now)
            pstore.insert_api_key(cur, key_hash=hash_key(key), principal_id=principal_id,
                                  key_prefix=key[:12], now=now)
            if human_email:
                humans.assign(cur, principal_id=principal_id, human_email=human_email,
                              set_by=actor, now=now)
        return self.get_principal(principal_id), key

    def set_human(self, principal_id: str, human_email: str, *, actor: str) -> dict[str, Any]:
        """Give an existing principal of a human role its ``human_email`` (once; Decision 80)."""
        row = self.get_principal(principal_id)
        if row["revoked_at"] is not None:
            raise Conflict("this principal is revoked")
        humans.check_for_role(row["role"], human_email, required=True)
        with self._audited([AuditEntry(actor, "principals.human",
                                       f"principal:{principal_id}")]) as cur:
            humans.assign(cur, principal_id=principal_id, human_email=human_email, set_by=actor,
                          now=self._reg.clock())
        return self.get_principal(principal_id)

    def get_principal(self, principal_id: str) -> dict[str, Any]:
        """One principal (never its key); NotFound when unknown."""
        row = pstore.find_principal(self._reg.store.cursor(), principal_id)
        if row is None:
            raise NotFound("no such principal")
        return row

    def list_principals(self) -> list[dict[str, Any]]:
        """Every principal, revoked ones too (never their keys)."""
        return pstore.list_principals(self._reg.store.cursor())

    def revoke_principal(self, principal_id: str, *, actor: str) -> dict[str, Any]:
        """Revoke a principal and all its keys; refuse to revoke the last active admin."""
        row = self.get_principal(principal_id)
        if row["revoked_at"] is not None:
            raise Conflict("this principal is already revoked")
        cur0 = self._reg.store.cursor()
        if row["role"] == "admin" and pstore.count_principals(cur0, role="admin",
                                                              active_only=True) <= 1:
            raise Conflict("cannot revoke the last active admin")
        with self._audited([AuditEntry(actor, "principals.revoke",
                                       f"principal:{principal_id}")]) as cur:
            pstore.revoke_principal(cur, principal_id, now=self._reg.clock())
        self._forget(principal_id)
        return self.get_principal(principal_id)

    def rotate_key(self, principal_id: str, *, actor: str) -> tuple[dict[str, Any], str]:
        """Issue a new key and revoke the old ones at once; returns (principal, new key)."""
        row = self.get_principal(principal_id)
        if row["revoked_at"] is not None:
            raise Conflict("this principal is revoked")
        key = new_key()
        with self._audited([AuditEntry(actor, "principals.rotate",
                                       f"principal:{principal_id}")]) as cur:
            now = self._reg.clock()
            pstore.revoke_keys(cur, principal_id, now=now)
            pstore.insert_api_key(cur, key_hash=hash_key(key), principal_id=principal_id,
                                  key_prefix=key[:12], now=now)
        self._forget(principal_id)
        return self.get_principal(principal_id), key

    def bootstrap_admin(self, *, data_dir: Path) -> Path | None:
        """On a registry that never had an admin, create one; write its key 0600; the path."""
        if pstore.count_principals(self._reg.store.cursor(), role="admin", active_only=False):
            return None
        _row, key = self.create_principal("admin", role="admin", agency=None, actor="system",
                                          require_human=False)
        return write_key_file(data_dir / ADMIN_KEY_FILE, key)


def write_key_file(path: Path, key: str) -> Path:
    """Write a key to ``path`` with mode 0600 (replacing any old file atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    os.replace(tmp, path)
    return path


def bootstrap_admin(registry: Registry, *, data_dir: Path) -> Path | None:
    """Give a fresh data directory its first admin key (``<data_dir>/admin.key``, 0600)."""
    return Principals(registry).bootstrap_admin(data_dir=data_dir)
