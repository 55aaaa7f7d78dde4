"""The API under generated requests from the roles the admin fuzz run does not cover.

``tests/api/test_fuzz.py`` sends schemathesis-generated requests to every documented operation
with an admin token. This extends it to the other two ways in, anonymous and operator, whose
requests end in other code paths (401, 403, role checks before validation), and to the probe
and metrics endpoints that deployments poll: no 5xx anywhere, and errors are JSON with a
``detail``.
"""

from __future__ import annotations

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from tests.api.conftest import METRICS_TOKEN

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 2


@pytest.mark.parametrize("role", ["anonymous", "operator"])
def test_no_generated_request_gets_a_5xx(
    app: FastAPI, auth: dict[str, dict[str, str]], role: str
) -> None:
    headers = auth.get(role, {})
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
            response = case.call(headers=headers)
            assert response.status_code < 500, (
                f"{role}: {case.method} {case.formatted_path} {case.query} {case.body!r} -> "
                f"{response.status_code}: {response.text[:500]}"
            )
            if response.status_code >= 400 and case.formatted_path.startswith("/api/"):
                assert "detail" in response.json(), response.text[:200]

        check()
    assert tried >= len(operations)


def test_probes_and_metrics_answer_odd_requests(app: FastAPI) -> None:
    with TestClient(app) as client:
        for path in ("/api/health", "/api/ready", "/metrics"):
            for method in ("GET", "HEAD", "POST", "DELETE", "OPTIONS"):
                response = client.request(method, path + "?x=%00&y=" + "z" * 5000)
                assert response.status_code < 500, (method, path, response.status_code)
        assert client.get("/api/ready").json()["status"] == "ready"
        scrape = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert scrape.text.count("inspection_api_requests_total") >= 1
