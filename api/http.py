"""The HTTP/1.1 connection protocol ``mpi serve`` runs: uvicorn's h11 protocol with a header
time limit.

Owns: ``HEADER_LIMIT`` (request line plus headers; more is answered 400 and the connection
closed, by h11's ``max_incomplete_event_size``) and ``HeaderTimeoutH11Protocol``, which closes a
connection whose request line and headers are not complete ``header_timeout`` seconds after
their first byte arrived (or after the connection opened). uvicorn's ``timeout_keep_alive`` only
covers an idle connection, and httptools has no size limit at all: this is why the server does
not use uvicorn's default HTTP implementation. A request h11 cannot parse is refused with a
problem+json 400, like every other 4xx. Must not: touch request bodies (the body limit
is api/middleware.py's) or log request content.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from api.errors import PROBLEM_MEDIA, PROBLEM_TYPE

HEADER_LIMIT = 64 * 1024
"""Largest request line plus headers, in bytes."""
DEFAULT_HEADER_TIMEOUT = 10.0
"""Seconds a client has to send a complete request line and headers."""


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose headers arrive too slowly."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    @classmethod
    def with_timeout(cls, seconds: float) -> type[HeaderTimeoutH11Protocol]:
        """A subclass with its own header time limit (uvicorn takes a class, not an instance)."""
        return type(cls.__name__, (cls,), {"header_timeout": float(seconds)})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the clock for the first request's headers."""
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        """Feed h11; headers complete stop the clock, the first bytes of a next request start it."""
        super().data_received(data)
        if self.conn.their_state is h11.IDLE and self.conn.our_state is not h11.ERROR:
            if self._header_timer is None and data:
                self._arm()
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock."""
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """Refuse a request h11 cannot parse with an RFC 9457 problem, like every other 4xx
        (uvicorn's own answer is text/plain); then close the connection."""
        body = json.dumps({"type": PROBLEM_TYPE + "bad_request", "title": "Bad request",
                           "status": 400, "code": "bad_request",
                           "detail": "Malformed HTTP request (request line or headers)."
                           }).encode()
        headers = [(b"content-type", PROBLEM_MEDIA.encode()), (b"connection", b"close"),
                   (b"content-length", str(len(body)).encode())]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                      h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expire(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()
