"""The outer ASGI layer: body-size limits, security headers, request latency metrics, and the
last-resort 500.

Owns: refusing bodies over the configured size with 413 (by Content-Length, or while
streaming), timing each request by route template, and turning any unhandled exception into a
500 problem that logs only the exception type, and adding ``Cache-Control: no-store`` to every
``/v1/`` response and ``Strict-Transport-Security`` over HTTPS. Must not: log or echo request content.
"""

from __future__ import annotations

import errno
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import problem
from api.metrics import Metrics

log = logging.getLogger("mpi.api")


class _BodyTooLarge(BaseException):
    """Raised from ``receive`` when a streamed body passes the limit (BaseException so that no
    framework layer turns it into a 400 on the way out)."""


class ServiceMiddleware:
    """Limits, metrics and the last-resort error handler around the app."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body: int, max_bulk_body: int,
                 bulk_paths: tuple[str, ...] = ("/v1/bulk",)) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body
        self.max_bulk_body = max_bulk_body
        self.bulk_paths = bulk_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run one request through the limits, the app and the metrics."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        limit = self.max_bulk_body if scope["path"] in self.bulk_paths else self.max_body
        state: dict[str, Any] = {"status": 500, "started": False, "received": 0}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
                message = {**message, "headers": [*message.get("headers", ()),
                                                  *_security_headers(scope)]}
            await send(message)

        async def receive_wrapper() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    raise _BodyTooLarge
            return message

        try:
            length = dict(scope.get("headers", ())).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                await self._reply(scope, send_wrapper, 413, "payload_too_large",
                                  f"The request body exceeds {limit} bytes.")
            else:
                await self.app(scope, receive_wrapper, send_wrapper)
        except _BodyTooLarge:
            if not state["started"]:
                await self._reply(scope, send_wrapper, 413, "payload_too_large",
                                  f"The request body exceeds {limit} bytes.")
        except Exception as exc:  # last resort: never a stack trace, never the message
            full = disk_full(exc)
            log.error("%s on %s %s", "disk full" if full else f"unhandled {type(exc).__name__}",
                      scope["method"], _template(scope))
            if not state["started"] and full:  # the write was refused whole: retry later
                await self._reply(scope, send_wrapper, 503, "storage_full",
                                  "The registry's disk has no space left; nothing of this "
                                  "request was stored. Retry later.",
                                  headers={"Retry-After": str(DISK_FULL_RETRY_S)})
            elif not state["started"]:
                await self._reply(scope, send_wrapper, 500, "internal_error",
                                  "The service could not complete the request.")
        finally:
            self.metrics.observe(method=scope["method"], route=_template(scope),
                                 status=state["status"], seconds=time.perf_counter() - start)

    @staticmethod
    async def _reply(scope: Scope, send: Send, status: int, code: str, detail: str, *,
                     headers: dict[str, str] | None = None) -> None:
        response = problem(status, code, detail, headers=headers)

        async def no_body() -> Message:
            return {"type": "http.disconnect"}

        await response(scope, no_body, send)


DISK_FULL_RETRY_S = 60
_FULL_MESSAGES = ("no space left on device", "disk is full", "not enough space")


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is the disk running out of space (ENOSPC, or
    DuckDB's message for it)."""
    seen: BaseException | None = exc
    for _ in range(8):  # the cause chain, bounded
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        if any(m in str(seen).lower() for m in _FULL_MESSAGES):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _security_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    """No caching of any API response (person data, records, matches, new keys); HSTS over TLS."""
    extra = []
    if scope["path"].startswith("/v1/") or scope["path"] == "/v1":
        extra.append((b"cache-control", b"no-store"))
    if scope.get("scheme") == "https":
        extra.append((b"strict-transport-security", b"max-age=31536000"))
    return extra


def _template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
