"""The role policy: which roles may call each route. The one table the API and tests share.

Owns: ``POLICY``, keyed by ``"METHOD /path/template"``; ``PUBLIC`` routes need no key. Every
route of the app must have an entry (``create_app`` refuses to start otherwise, and a test
walks the whole role x route matrix). Data-level rules (an agency sees only its own records)
live in mpi/access.py. Must not: hold any other logic.
"""

from __future__ import annotations

from typing import Final

from mpi.principals import ROLES

PUBLIC: Final = frozenset({"*"})

AGENCY = frozenset({"agency"})
AGENCY_OR_STEWARD = frozenset({"agency", "steward"})
ADMIN = frozenset({"admin"})
AUDITOR = frozenset({"auditor"})
STEWARD = frozenset({"steward"})
ANY_ROLE = frozenset(ROLES)

POLICY: Final[dict[str, frozenset[str]]] = {
    "POST /v1/records": AGENCY,
    "GET /v1/records/{source_record_id}": AGENCY_OR_STEWARD,
    "PUT /v1/records/{source_record_id}": AGENCY,
    "DELETE /v1/records/{source_record_id}": AGENCY,
    "POST /v1/match": AGENCY_OR_STEWARD,
    "GET /v1/persons/{person_key}": AGENCY_OR_STEWARD,
    "POST /v1/bulk": AGENCY,
    "GET /v1/jobs/{job_id}": frozenset({"agency", "steward", "admin"}),
    "GET /v1/schema": PUBLIC,
    "GET /healthz": PUBLIC,
    "GET /readyz": PUBLIC,
    "GET /metrics": PUBLIC,
    "GET /metrics/registry": frozenset({"admin", "steward", "auditor"}),  # Decision 93
    "POST /v1/agencies": ADMIN,
    "GET /v1/agencies": ADMIN,
    "PATCH /v1/agencies/{agency}": ADMIN,
    "POST /v1/principals": ADMIN,
    "GET /v1/principals": ADMIN,
    "POST /v1/principals/{principal_id}/revoke": ADMIN,
    "POST /v1/principals/{principal_id}/rotate": ADMIN,
    "PUT /v1/principals/{principal_id}/human": ADMIN,
    "POST /v1/admin/backup": ADMIN,
    "GET /v1/audit": AUDITOR,
    "GET /v1/audit/verify": AUDITOR,
    "GET /v1/audit/checkpoints": frozenset({"auditor", "admin"}),
    "GET /v1/reports/linkage-quality": frozenset({"steward", "admin"}),
    "GET /v1/review": STEWARD,
    "GET /v1/review/{item_id}": STEWARD,
    "POST /v1/review/{item_id}/decision": STEWARD,
    "POST /v1/review/{item_id}/reopen": STEWARD,
    "POST /v1/review/{item_id}/verification": STEWARD,
    "GET /v1/verifications": AGENCY,
    "POST /v1/verifications/{task_id}/answer": AGENCY,
    "POST /v1/labels": AGENCY_OR_STEWARD,
    "GET /v1/constraints": STEWARD,
    "POST /v1/constraints/{constraint_id}/revoke": STEWARD,
    "POST /v1/persons/{person_key}/merge": STEWARD,
    "POST /v1/persons/{person_key}/split": STEWARD,
    "GET /v1/persons/{person_key}/lineage": STEWARD,
    "POST /v1/models/train": STEWARD,
    "GET /v1/models": frozenset({"steward", "admin"}),
    "GET /v1/models/{version}": frozenset({"steward", "admin"}),
    "GET /v1/models/{version}/charts/{chart}": frozenset({"steward", "admin"}),
    "POST /v1/models/{version}/evaluate": STEWARD,
    "GET /v1/models/{version}/impact": STEWARD,
    "POST /v1/models/{version}/promote": STEWARD,
    "POST /v1/link": STEWARD,
    "POST /v1/keys/export": STEWARD,
    "GET /v1/jobs/{job_id}/result": STEWARD,
    "PUT /v1/datasets/{dataset}": AGENCY,
    "POST /v1/datasets/{agency}/{dataset}/attributes/{attribute}/sign-off": STEWARD,
    "POST /v1/datasets/{agency}/{dataset}/attributes/{attribute}/sign-off/revoke": STEWARD,
    "GET /v1/datasets": frozenset({"agency", "steward", "approver", "researcher", "admin"}),
    "POST /v1/extracts": frozenset({"researcher"}),
    "GET /v1/extracts": frozenset({"researcher", "approver", "steward"}),
    "GET /v1/extracts/{extract_id}": frozenset({"researcher", "approver", "steward"}),
    "POST /v1/extracts/{extract_id}/approvals": frozenset({"approver", "steward"}),
    "POST /v1/extracts/{extract_id}/build": frozenset({"researcher", "steward"}),
    "GET /v1/extracts/{extract_id}/download": frozenset({"researcher"}),
    "POST /v1/extracts/{extract_id}/close": frozenset({"researcher", "steward"}),
    "GET /v1/persons/{person_key}/disclosures": AGENCY_OR_STEWARD,
    "GET /v1/persons/{person_key}/consent": AGENCY_OR_STEWARD,
    "POST /v1/persons/{person_key}/consent": AGENCY_OR_STEWARD,
    "GET /v1/reports/requests": frozenset({"steward", "admin", "auditor"}),
    "GET /v1/keys/signing": PUBLIC,
    "GET /openapi.json": PUBLIC,
    "GET /docs": PUBLIC,
    "GET /docs/oauth2-redirect": PUBLIC,
    # The web console (api/console, decision 0081): signed in with a session cookie (or, like
    # any route, an API key header); each page lists the roles that may open it.
    "GET /console/login": PUBLIC,
    "POST /console/login": PUBLIC,
    "POST /console/logout": ANY_ROLE,
    "GET /console": ANY_ROLE,
    "GET /console/review": STEWARD,
    "GET /console/review/{item_id}": STEWARD,
    "POST /console/review/{item_id}/decision": STEWARD,
    "POST /console/review/{item_id}/reopen": STEWARD,
    "POST /console/review/{item_id}/verification": STEWARD,
    "GET /console/verifications": AGENCY,
    "POST /console/verifications/{task_id}/answer": AGENCY,
    "POST /console/relink": STEWARD,
    "GET /console/jobs/{job_id}": frozenset({"steward", "admin"}),
    "GET /console/jobs/{job_id}/result": STEWARD,
    "GET /console/keys": STEWARD,
    "POST /console/keys/export": STEWARD,
    "POST /console/models/{version}/evaluate": STEWARD,
    "POST /console/models/train": STEWARD,
    "GET /console/persons": STEWARD,
    "GET /console/persons/{person_key}": STEWARD,
    "POST /console/persons/{person_key}/merge": STEWARD,
    "POST /console/persons/{person_key}/split": STEWARD,
    "GET /console/constraints": STEWARD,
    "POST /console/constraints/{constraint_id}/revoke": STEWARD,
    "GET /console/models": STEWARD,
    "GET /console/models/{version}": STEWARD,
    "GET /console/models/{version}/charts/{chart}": STEWARD,
    "POST /console/models/{version}/promote": STEWARD,
    "GET /console/reports/equity": frozenset({"steward", "admin"}),
    "GET /console/extracts": frozenset({"researcher", "approver", "steward"}),
    "GET /console/extracts/{extract_id}": frozenset({"researcher", "approver", "steward"}),
    "POST /console/extracts/{extract_id}/approvals": frozenset({"approver", "steward"}),
    "GET /console/extracts/{extract_id}/download": frozenset({"researcher"}),
    "GET /console/datasets": frozenset({"researcher"}),
    "POST /console/extracts": frozenset({"researcher"}),
    "GET /console/audit": AUDITOR,
    "GET /console/audit/verify": AUDITOR,
    "GET /console/admin": ADMIN,
    "POST /console/admin/agencies": ADMIN,
    "POST /console/admin/principals": ADMIN,
    "POST /console/admin/principals/{principal_id}/revoke": ADMIN,
    "POST /console/admin/principals/{principal_id}/rotate": ADMIN,
}


def route_key(method: str, path: str) -> str:
    """The policy key of a route (HEAD is checked as GET)."""
    return f"{'GET' if method == 'HEAD' else method} {path}"


def allowed(method: str, path: str) -> frozenset[str]:
    """The roles allowed on a route; KeyError when the route has no entry."""
    return POLICY[route_key(method, path)]
