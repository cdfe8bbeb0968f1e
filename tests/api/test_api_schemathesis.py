"""Schemathesis against the app's own OpenAPI (over ASGI), authenticated as each role.

Owns: the promise that generated requests, valid or not, never get a 5xx and that every
response (success or problem+json) matches the documented status codes, content types and
schemas. Bounded: a few examples per operation, the whole test well under a minute.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.api import RECORDS, ROLE_NAMES, A, build_world

pytestmark = pytest.mark.integration  # schemathesis over every operation and role

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
EXAMPLES = 10


def test_schemathesis_every_operation_every_role(tmp_path: Path) -> None:
    w = build_world(tmp_path)
    try:
        assert w.post_records(A, RECORDS[A][:5]).status_code == 200
        schema = schemathesis.openapi.from_asgi("/openapi.json", w.client.app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 20
        for op in operations:
            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy())
            def run(case: schemathesis.Case) -> None:
                for role in (*ROLE_NAMES, None):
                    headers = w.h(role) if role else {}
                    response = case.call(headers=headers)
                    case.validate_response(response, checks=CHECKS)

            run()
        assert w.registry.verify_audit().ok
    finally:
        w.registry.close()
