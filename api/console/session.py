"""Console sessions: server-side, in memory, ended by logout, idle timeout or a dead key.

Owns: ``SessionStore`` (random session ids, each session's principal id, the key it was opened
with and its CSRF token, the idle timeout) and the names and attributes of the console's
cookies. A session keeps the API key it was opened with in server memory only (never in a
cookie, a log line or a page), so that every request re-authenticates through
``mpi.principals`` exactly as an API call does: a revoked or rotated key ends the session at
once. Must not: persist sessions (a restart logs everyone out), or compare secrets except in
constant time.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

SESSION_COOKIE = "mpi_console"
LOGIN_COOKIE = "mpi_console_login"
COOKIE_PATH = "/console"
MAX_SESSIONS = 10_000


def cookie_attributes() -> dict[str, object]:
    """The attributes of every console cookie: HttpOnly, Secure, SameSite=Strict, path /console."""
    return {"httponly": True, "secure": True, "samesite": "strict", "path": COOKIE_PATH}


def same_secret(a: str | None, b: str | None) -> bool:
    """Whether two presented secrets are equal (constant time; missing never matches)."""
    return bool(a) and bool(b) and secrets.compare_digest(str(a), str(b))


@dataclass
class Session:
    """One signed-in human: their principal, the key they signed in with, a CSRF token."""

    session_id: str
    principal_id: str
    key: str = field(repr=False)
    csrf: str = field(repr=False)
    last_seen: float = 0.0


class SessionStore:
    """The open console sessions of one app, with an idle timeout."""

    def __init__(self, idle_seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def open(self, principal_id: str, key: str) -> Session:
        """A new session for a principal that just presented ``key``."""
        now = self._clock()
        s = Session(secrets.token_urlsafe(32), principal_id, key, secrets.token_urlsafe(32), now)
        with self._lock:
            self._expire(now)
            if len(self._sessions) >= MAX_SESSIONS:  # bounded memory: the stalest goes first
                del self._sessions[min(self._sessions.values(), key=lambda x: x.last_seen).session_id]
            self._sessions[s.session_id] = s
        return s

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id (its idle clock restarted), or None (unknown, idle)."""
        if not session_id:
            return None
        now = self._clock()
        with self._lock:
            s = self._sessions.get(session_id)
            if s is None:
                return None
            if now - s.last_seen > self.idle_seconds:
                del self._sessions[session_id]
                return None
            s.last_seen = now
            return s

    def close(self, session_id: str) -> None:
        """End one session (logout, or its key no longer works)."""
        with self._lock:
            self._sessions.pop(session_id, None)

    def count(self) -> int:
        """How many sessions are open (idle ones included until next touched)."""
        with self._lock:
            return len(self._sessions)

    def _expire(self, now: float) -> None:
        for sid in [k for k, s in self._sessions.items() if now - s.last_seen > self.idle_seconds]:
            del self._sessions[sid]
