"""Authentication and roles: anonymous requests are refused, roles are enforced, CSRF checked."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from inspection.db.models import AuditLog, ModelStatus, ModelVersion
from tests.api.conftest import PASSWORDS, count, ui_login

PUBLIC_API = {"/api/health", "/api/ready", "/api/auth/token"}


def _api_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) of the documented API, path parameters filled with 1."""
    routes = []
    for template, methods in app.openapi()["paths"].items():
        if not template.startswith("/api/") or template in PUBLIC_API:
            continue
        path = re.sub(r"\{[^}]+\}", "1", template)
        routes.extend((method.upper(), path) for method in methods)
    return routes


def test_every_api_route_refuses_anonymous_requests(client: TestClient, app: FastAPI) -> None:
    routes = _api_routes(app)
    assert len(routes) > 25
    for method, path in routes:
        response = client.request(method, path, json={})
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["detail"].startswith("log in first")
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "path", ["/", "/review", "/inspections/1", "/charts", "/models", "/stations/1", "/audit"]
)
def test_pages_redirect_anonymous_users_to_login(client: TestClient, path: str) -> None:
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=")


def test_health_is_public(client: TestClient) -> None:
    assert client.get("/api/health").json() == {"status": "ok"}


def test_operator_cannot_promote_a_model(
    client: TestClient, auth: dict[str, dict[str, str]], session: Session
) -> None:
    candidate = session.scalar(
        select(ModelVersion).where(ModelVersion.status == ModelStatus.CANDIDATE).limit(1)
    )
    assert candidate is not None
    response = client.post(f"/api/models/{candidate.id}/promote", headers=auth["operator"])
    assert response.status_code == 403
    assert "engineer role" in response.json()["detail"]
    session.rollback()
    assert session.get(ModelVersion, candidate.id).status == ModelStatus.CANDIDATE  # type: ignore[union-attr]

    response = client.post(f"/api/models/{candidate.id}/promote", headers=auth["engineer"])
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "active"
    session.rollback()
    active = session.scalars(
        select(ModelVersion).where(
            ModelVersion.station_id == candidate.station_id,
            ModelVersion.status == ModelStatus.ACTIVE,
        )
    ).all()
    assert [v.id for v in active] == [candidate.id]
    actions = set(
        session.scalars(select(AuditLog.action).where(AuditLog.actor == "engineer")).all()
    )
    assert {"model_version.promote", "model_version.set_status"} <= actions


@pytest.mark.parametrize(
    ("method", "path", "body", "allowed"),
    [
        ("PUT", "/api/stations/1/thresholds", {"image_threshold": 0.6}, "engineer"),
        ("POST", "/api/stations/1/rollback", None, "engineer"),
        ("POST", "/api/retrain-jobs", {"station_id": 1}, "engineer"),
        ("GET", "/api/audit", None, "engineer"),
        ("GET", "/api/users", None, "admin"),
        (
            "POST",
            "/api/users",
            {"username": "newbie", "role": "operator", "password": "long-enough"},
            "admin",
        ),
    ],
)
def test_roles_are_enforced(
    client: TestClient,
    auth: dict[str, dict[str, str]],
    method: str,
    path: str,
    body: dict[str, object] | None,
    allowed: str,
) -> None:
    order = ["operator", "engineer", "admin"]
    for role in order:
        response = client.request(method, path, json=body, headers=auth[role])
        if order.index(role) < order.index(allowed):
            assert response.status_code == 403, (role, response.text)
        else:
            assert response.status_code != 403, (role, response.text)
            assert response.status_code < 500, (role, response.text)


def test_token_login_and_wrong_password(client: TestClient, session: Session) -> None:
    response = client.post(
        "/api/auth/token", json={"username": "operator", "password": PASSWORDS["operator"]}
    )
    assert response.status_code == 200
    token = response.json()["access_token"]
    me = client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["username"] == "operator"
    assert me.json()["role"] == "operator"

    wrong = client.post("/api/auth/token", json={"username": "operator", "password": "nope"})
    assert wrong.status_code == 401
    assert "password" in wrong.json()["detail"]
    assert "nope" not in wrong.text
    unknown = client.post("/api/auth/token", json={"username": "ghost", "password": "nope"})
    assert unknown.status_code == 401
    assert unknown.json()["detail"] == wrong.json()["detail"]
    assert count(session, "SELECT count(*) FROM audit_log WHERE action = 'user.login_failed'") == 2
    assert count(session, "SELECT count(*) FROM audit_log WHERE action = 'user.login'") == 1


def test_repeated_failures_are_throttled(client: TestClient) -> None:
    for _ in range(5):
        response = client.post("/api/auth/token", json={"username": "admin", "password": "x"})
        assert response.status_code == 401
    response = client.post(
        "/api/auth/token", json={"username": "admin", "password": PASSWORDS["admin"]}
    )
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) > 0


def test_forged_and_malformed_tokens_are_refused(client: TestClient) -> None:
    for header in (
        "Bearer abc.def.ghi",
        "Bearer ",
        "Basic b3BlcmF0b3I6eA==",
        "Bearer " + "A" * 5000,
    ):
        response = client.get("/api/stations", headers={"Authorization": header})
        assert response.status_code == 401, header


def test_password_change_and_deactivation_end_sessions(
    client: TestClient, auth: dict[str, dict[str, str]], session: Session
) -> None:
    operator_id = client.get("/api/auth/me", headers=auth["operator"]).json()["id"]
    response = client.patch(
        f"/api/users/{operator_id}", json={"password": "a-new-password"}, headers=auth["admin"]
    )
    assert response.status_code == 200
    assert client.get("/api/auth/me", headers=auth["operator"]).status_code == 401
    engineer_id = client.get("/api/auth/me", headers=auth["engineer"]).json()["id"]
    response = client.patch(
        f"/api/users/{engineer_id}", json={"is_active": False}, headers=auth["admin"]
    )
    assert response.json()["is_active"] is False
    assert client.get("/api/auth/me", headers=auth["engineer"]).status_code == 401
    audit = count(session, "SELECT count(*) FROM audit_log WHERE action = 'user.update'")
    assert audit == 2
    session.rollback()
    rows = session.scalars(select(AuditLog).where(AuditLog.action == "user.update")).all()
    assert all("a-new-password" not in str(r.after) for r in rows)


def test_admin_cannot_lock_themselves_out(
    client: TestClient, auth: dict[str, dict[str, str]]
) -> None:
    admin_id = client.get("/api/auth/me", headers=auth["admin"]).json()["id"]
    response = client.patch(
        f"/api/users/{admin_id}", json={"is_active": False}, headers=auth["admin"]
    )
    assert response.status_code == 409
    response = client.patch(
        f"/api/users/{admin_id}", json={"role": "operator"}, headers=auth["admin"]
    )
    assert response.status_code == 409


def test_cookie_session_needs_csrf_token_for_changes(client: TestClient, session: Session) -> None:
    csrf = ui_login(client, "operator")
    body = {"verdict": "pass"}
    response = client.post("/api/inspections/1/labels", json=body)
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    response = client.post(
        "/api/inspections/1/labels", json=body, headers={"X-CSRF-Token": "wrong"}
    )
    assert response.status_code == 403
    response = client.post("/api/inspections/1/labels", json=body, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 201, response.text
    assert client.get("/api/auth/me").json()["auth"] == "cookie"
    assert count(session, "SELECT count(*) FROM operator_label") == 1


def test_logout_form_needs_csrf_and_ends_session(client: TestClient) -> None:
    csrf = ui_login(client, "operator")
    assert client.post("/logout", data={}, follow_redirects=False).status_code == 403
    response = client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303
    assert client.get("/", follow_redirects=False).status_code == 303


def test_login_form_errors_and_safe_redirects(client: TestClient) -> None:
    page = client.get("/login?next=//evil.example/x")
    assert 'name="next" value="/"' in page.text
    token = re.search(r'name="login_csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    response = client.post(
        "/login",
        data={"username": "operator", "password": "wrong", "login_csrf": token, "next": "/"},
    )
    assert response.status_code == 401
    assert "Wrong username or password" in response.text
    response = client.post(
        "/login", data={"username": "operator", "password": "x", "login_csrf": "forged"}
    )
    assert response.status_code == 403
    assert "expired" in response.text
