"""The HTTP/1.1 connection protocol ``mpi serve`` runs: uvicorn's httptools protocol with
limits on the request head.

Owns: ``HEADER_LIMIT`` (request line plus headers; more is answered 431 and the connection
closed, counted on the raw bytes so an unfinished header cannot grow the server's memory) and
``LimitedHttpToolsProtocol``, which also closes a connection whose request line and headers
are not complete ``header_timeout`` seconds after their first byte arrived (or after the
connection opened), and answers a request the parser refuses with a problem+json 400.
uvicorn's ``timeout_keep_alive`` only covers an idle connection and httptools has no size limit
of its own; h11 with ``max_incomplete_event_size`` did the same 15-30% slower (Decision 67).
Must not: touch request bodies (the body limit is api/middleware.py's) or log request content.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.errors import PROBLEM_MEDIA, PROBLEM_TYPE

HEADER_LIMIT = 64 * 1024
"""Largest request line plus headers, in bytes."""
DEFAULT_HEADER_TIMEOUT = 10.0
"""Seconds a client has to send a complete request line and headers."""


def _problem_400() -> bytes:
    body = json.dumps({"type": PROBLEM_TYPE + "bad_request", "title": "Bad request",
                       "status": 400, "code": "bad_request",
                       "detail": "Malformed HTTP request (request line or headers)."}).encode()
    return (b"HTTP/1.1 400 Bad Request\r\ncontent-type: " + PROBLEM_MEDIA.encode()
            + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
            + body)


def _problem_431() -> bytes:
    body = json.dumps({"type": PROBLEM_TYPE + "headers_too_large",
                       "title": "Request header fields too large", "status": 431,
                       "code": "headers_too_large",
                       "detail": f"The request line and headers exceed {HEADER_LIMIT} bytes."
                       }).encode()
    return (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: "
            + PROBLEM_MEDIA.encode() + b"\r\ncontent-length: " + str(len(body)).encode()
            + b"\r\nconnection: close\r\n\r\n" + body)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (C parser, the fast one) with the same guarantees as
    ``HeaderTimeoutH11Protocol``: request line plus headers capped at ``HEADER_LIMIT`` bytes
    (431, connection closed; counted on the raw bytes, so an unfinished header cannot grow),
    a header time limit, and problem+json for requests the parser refuses."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._in_head = True
        self._head_bytes = 0

    @classmethod
    def with_timeout(cls, seconds: float) -> type[LimitedHttpToolsProtocol]:
        """A subclass with its own header time limit (uvicorn takes a class, not an instance)."""
        return type(cls.__name__, (cls,), {"header_timeout": float(seconds)})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the clock for the first request's headers."""
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        """Feed the parser; refuse once a request's head outgrows the limit."""
        super().data_received(data)
        if self._in_head:  # a request line and headers are still arriving
            # (a head that began inside this chunk counts the whole chunk: an over-count only
            # for a client pipelining a request behind a large body, which no client here does)
            self._head_bytes += len(data)
            if self._head_bytes > HEADER_LIMIT and not self.transport.is_closing():
                self.transport.write(_problem_431())
                self.transport.close()

    def on_message_begin(self) -> None:
        """A request starts: its head is counted and timed from here."""
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0
        self._arm()

    def on_headers_complete(self) -> None:
        """The head is complete: stop counting and stop the clock."""
        self._in_head = False
        self._disarm()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        """A request the parser refuses gets a problem+json 400; the connection is closed."""
        self.transport.write(_problem_400())
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock."""
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expire(self) -> None:
        self._header_timer = None
        if self._in_head and not self.transport.is_closing():
            self.transport.close()
