"""The one tree of domain errors, each with a stable ``code``.

Owns: every exception the domain raises on purpose. Must not: import HTTP frameworks or carry
tokens, secrets or person keys in messages (messages name rows, fields and reasons only).

    MpiError
    ├── InvalidInput            (bad request data; row/field/reason details)
    ├── NotFound                (unknown record, person, model, job)
    ├── Conflict                (state forbids the change)
    │   └── RebuildRequired     (a package's person opted out since it was built)
    ├── Unauthorized / Forbidden
    ├── RateLimited
    └── ConfigurationError      (missing secret file, bad settings, missing Java/pyspark)
        ├── JournalCorrupt      (a journal segment damaged before its last entry)
        └── AuditChainBroken    (the audit log does not reach or match its signed checkpoint)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One located problem: which row (1-based, data rows) and field, and why."""

    row: int | None
    field: str | None
    reason: str
    source_record_id: str | None = None

    def describe(self) -> str:
        """Render as a one-line human message."""
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field:
            where.append(f"field {self.field!r}")
        prefix = ", ".join(where)
        return f"{prefix}: {self.reason}" if prefix else self.reason


class MpiError(Exception):
    """Base of every domain error."""

    code = "mpi_error"

    def __init__(self, message: str, *, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems: list[Problem] = problems or []


class InvalidInput(MpiError):
    """The caller sent data that cannot be accepted as it is."""

    code = "invalid_input"


class NotFound(MpiError):
    """The named thing does not exist."""

    code = "not_found"


class Conflict(MpiError):
    """The current state forbids the requested change."""

    code = "conflict"


class RebuildRequired(Conflict):
    """A built package includes a person who has opted out since; it is not delivered until
    the extract is rebuilt (Decision 79)."""

    code = "rebuild_required"


class Unauthorized(MpiError):
    """No valid credentials."""

    code = "unauthorized"


class Forbidden(MpiError):
    """Valid credentials, but not allowed."""

    code = "forbidden"


class RateLimited(MpiError):
    """Too many requests; retry later."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigurationError(MpiError):
    """The service or a command is not set up correctly."""

    code = "configuration_error"


class JournalCorrupt(ConfigurationError):
    """A journal segment fails its checksum before its last entry: acknowledged writes may be
    in the damaged part, so the registry does not start (``mpi journal recover``)."""

    code = "journal_corrupt"


class AuditChainBroken(ConfigurationError):
    """The audit log was truncated, edited or re-hashed since its latest signed checkpoint (or
    the checkpoint itself is forged), so the registry does not start (decision 0069)."""

    code = "audit_chain_broken"


def audit_outcome(exc: MpiError) -> str:
    """The audit outcome of a refused request: ``not_found`` or ``invalid``."""
    return "not_found" if isinstance(exc, NotFound) else "invalid"
