"""The one place that turns errors into HTTP: RFC 9457 ``application/problem+json``.

Owns: the mapping from each ``MpiError`` subclass (stable ``code``) to an HTTP status, the
problem body, the handlers for domain errors, request validation errors (locations and
messages only, never the input values) and HTTP errors, and how OpenAPI documents errors.
Must not: put a stack trace, token, secret or person key in a body or a log line.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from mpi.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    MpiError,
    NotFound,
    RateLimited,
    Unauthorized,
)

PROBLEM_TYPE = "https://mpi.dev/problems/"
PROBLEM_MEDIA = "application/problem+json"
log = logging.getLogger("mpi.api")

STATUS: dict[type[MpiError], int] = {
    InvalidInput: 422, NotFound: 404, Conflict: 409, Unauthorized: 401, Forbidden: 403,
    RateLimited: 429, MpiError: 500}
TITLES = {
    400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
    405: "Method not allowed", 409: "Conflict", 413: "Payload too large",
    422: "Unprocessable content", 429: "Too many requests", 500: "Internal server error",
    503: "Service unavailable"}
_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
               413: "payload_too_large", 503: "not_ready"}
DESCRIPTIONS = {
    401: "Missing, unknown or revoked API key.", 403: "The principal's role may not do this.",
    404: "Not found (or not visible to this principal).", 409: "Conflict with the current state.",
    413: "Request body too large.",
    422: "Invalid input; `errors` names each row (1-based position), field and reason.",
    429: "Rate limit exceeded; see `Retry-After`.", 500: "Internal error (no details exposed).",
    503: "The registry is not open yet, or its disk is full (`storage_full`, with "
         "`Retry-After`)."}


class ProblemItemOut(BaseModel):
    """One located problem: row (1-based record position or file line), field and reason."""

    row: int | None = Field(None, description="1-based position of the record (or file line).")
    field: str | None = Field(None, description="The field at fault, e.g. `tokens.given_name`.")
    reason: str


class ProblemOut(BaseModel):
    """An RFC 9457 problem document."""

    type: str = Field(description="`https://mpi.dev/problems/<code>`.")
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable machine-readable error code.")
    errors: list[ProblemItemOut] | None = None


class NotReady(Exception):
    """The app has no open registry (startup not finished or failed)."""


def problem(status: int, code: str, detail: str, *, errors: list[dict[str, Any]] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    """A problem+json response."""
    body: dict[str, Any] = {"type": PROBLEM_TYPE + code, "title": TITLES.get(status, "Error"),
                            "status": status, "detail": detail, "code": code}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA)


def status_for(exc: MpiError) -> int:
    """The HTTP status of a domain error (its nearest mapped class)."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def _domain(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MpiError)
    status = status_for(exc)
    if status >= 500:
        log.error("domain error %s (%s)", type(exc).__name__, exc.code)
        return problem(500, exc.code, "The service could not complete the request.")
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(max(1, int(exc.retry_after + 0.999)))
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="mpi"'
    errors = [{"row": p.row, "field": p.field, "reason": p.reason} for p in exc.problems] \
        if exc.problems else None
    return problem(status, exc.code, exc.message, errors=errors, headers=headers or None)


def _row_and_field(loc: tuple[Any, ...]) -> tuple[int | None, str]:
    parts = list(loc)
    if parts[:1] == ["body"]:
        parts = parts[1:]
    row = None
    if len(parts) >= 2 and parts[0] in ("records", "labels") and isinstance(parts[1], int):
        row, parts = parts[1] + 1, parts[2:]
    return row, ".".join(str(p) for p in parts) or str(loc[0] if loc else "body")


def _validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for err in exc.errors():  # only location and message: the input may hold tokens
        row, field = _row_and_field(tuple(err.get("loc", ())))
        errors.append({"row": row, "field": field, "reason": str(err.get("msg", "invalid"))})
    return problem(422, "validation_error", "The request does not match the API schema.",
                   errors=errors)


def _http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    detail = TITLES.get(status, "HTTP error") if status != 400 else "Malformed request body."
    headers = dict(exc.headers) if exc.headers else None
    return problem(status, _HTTP_CODES.get(status, f"http_{status}"), detail, headers=headers)


def _not_ready(_request: Request, _exc: Exception) -> JSONResponse:
    return problem(503, "not_ready", "The registry is not open.")


def install(app: FastAPI) -> None:
    """Register the problem+json handlers on ``app``."""
    app.add_exception_handler(MpiError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(NotReady, _not_ready)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for route-specific error statuses (rendered as problem+json)."""
    return {s: {"model": ProblemOut, "description": DESCRIPTIONS.get(s, TITLES.get(s, "Error"))}
            for s in statuses}


def document_problems(schema: dict[str, Any], *, authenticated: set[tuple[str, str]]) -> None:
    """Make every error response in an OpenAPI document problem+json; add common errors."""
    comps = schema.setdefault("components", {}).setdefault("schemas", {})
    comps.update(ProblemOut.model_json_schema(ref_template="#/components/schemas/{model}")
                 .pop("$defs", {}))
    comps["ProblemOut"] = ProblemOut.model_json_schema(ref_template="#/components/schemas/{model}")
    comps["ProblemOut"].pop("$defs", None)
    ref = {"$ref": "#/components/schemas/ProblemOut"}
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            responses = op.setdefault("responses", {})
            extra = [500]
            if op.get("parameters") or op.get("requestBody"):
                extra.append(422)
            if op.get("requestBody"):
                extra.append(413)
            if (method.upper(), path) in authenticated:
                extra += [401, 403, 429]
            for s in extra:
                responses.setdefault(str(s), {"description": DESCRIPTIONS[s]})
            for status, resp in responses.items():
                if status.isdigit() and int(status) >= 400:
                    resp["content"] = {PROBLEM_MEDIA: {"schema": ref}}
                    resp.setdefault("description", DESCRIPTIONS.get(int(status), "Error"))
    for unused in ("HTTPValidationError", "ValidationError"):
        comps.pop(unused, None)
