"""Property-based: no generated request to the documented API gets a 5xx (schemathesis).

Every operation of ``/openapi.json`` gets a few generated requests (valid and invalid
parameters and bodies, derandomized so runs repeat) with an admin token, so the role checks
let them through to validation and the database. A handful of examples per operation keeps
this to seconds; test_validation.py covers the cases that matter most by hand.
"""

from __future__ import annotations

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 6


def test_no_generated_request_gets_a_5xx(app: FastAPI, auth: dict[str, dict[str, str]]) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 25
    tried = 0
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            nonlocal tried
            tried += 1
            response = case.call(headers=auth["admin"])
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} {case.query} {case.body!r} -> "
                f"{response.status_code}: {response.text[:500]}"
            )

        check()
    assert tried >= len(operations)
