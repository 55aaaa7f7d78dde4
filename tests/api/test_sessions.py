"""Sessions an attacker cannot keep (#19 security): logout and "sign out everywhere" end logins
on the server, the login lockout is per (username, address), persisted and never locks the
rightful user out, usernames are unique regardless of case, weak passwords are refused."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from inspection.api.app import create_app
from inspection.api.auth import SESSION_COOKIE
from inspection.api.settings import ApiSettings
from tests.api.conftest import PASSWORDS, count, ui_login


def _token(client: TestClient, username: str = "operator") -> dict[str, str]:
    response = client.post(
        "/api/auth/token", json={"username": username, "password": PASSWORDS[username]}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _label(client: TestClient, headers: dict[str, str]) -> int:
    return client.post(
        "/api/inspections/1/labels", json={"verdict": "fail", "note": "replayed"}, headers=headers
    ).status_code


def test_a_cookie_replayed_after_logout_gets_401(app: FastAPI, client: TestClient) -> None:
    csrf = ui_login(client, "operator")
    cookie = client.cookies[SESSION_COOKIE]
    assert client.get("/api/auth/me").status_code == 200
    response = client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303

    with TestClient(app) as attacker:
        attacker.cookies.set(SESSION_COOKIE, cookie)
        assert attacker.get("/api/auth/me").status_code == 401
        assert _label(attacker, {"X-CSRF-Token": csrf}) == 401
        page = attacker.get("/review", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"].startswith("/login")


def test_logout_ends_only_the_session_presented(app: FastAPI, client: TestClient) -> None:
    ui_login(client, "operator")
    with TestClient(app) as other_browser:
        other_csrf = ui_login(other_browser, "operator")
        other_browser.post("/logout", data={"csrf_token": other_csrf}, follow_redirects=False)
        assert other_browser.get("/api/auth/me").status_code == 401
    assert client.get("/api/auth/me").status_code == 200


def test_api_logout_revokes_the_bearer_token(client: TestClient, session: Session) -> None:
    token = _token(client)
    other = _token(client)
    assert client.get("/api/auth/me", headers=token).status_code == 200
    response = client.post("/api/auth/logout", headers=token)
    assert response.status_code == 204
    assert client.get("/api/auth/me", headers=token).status_code == 401
    assert _label(client, token) == 401
    assert client.post("/api/auth/logout", headers=token).status_code == 401
    assert client.get("/api/auth/me", headers=other).status_code == 200
    assert count(session, "SELECT count(*) FROM audit_log WHERE action = 'user.logout'") == 1


def test_admin_signs_a_user_out_everywhere(
    app: FastAPI, client: TestClient, auth: dict[str, dict[str, str]], session: Session
) -> None:
    token = _token(client)
    ui_login(client, "operator")
    operator_id = client.get("/api/auth/me", headers=token).json()["id"]
    response = client.post(
        f"/api/users/{operator_id}/sign-out-everywhere", headers=auth["operator"]
    )
    assert response.status_code == 403
    response = client.post(f"/api/users/{operator_id}/sign-out-everywhere", headers=auth["admin"])
    assert response.status_code == 200
    assert client.get("/api/auth/me", headers=token).status_code == 401
    assert client.get("/api/auth/me", headers=auth["operator"]).status_code == 401
    assert client.get("/api/auth/me").status_code == 401  # the browser session too
    assert client.get("/api/auth/me", headers=auth["engineer"]).status_code == 200
    assert client.get("/api/auth/me", headers=_token(client)).status_code == 200  # log in again
    audit = "SELECT count(*) FROM audit_log WHERE action = 'user.sign_out_everywhere'"
    assert count(session, audit) == 1


def test_reactivating_an_account_does_not_revive_its_old_logins(
    client: TestClient, auth: dict[str, dict[str, str]]
) -> None:
    token = _token(client)
    operator_id = client.get("/api/auth/me", headers=token).json()["id"]
    url = f"/api/users/{operator_id}"
    assert client.patch(url, json={"is_active": False}, headers=auth["admin"]).status_code == 200
    assert client.patch(url, json={"is_active": True}, headers=auth["admin"]).status_code == 200
    assert client.get("/api/auth/me", headers=token).status_code == 401


def _fail_logins(client: TestClient, n: int) -> None:
    for _ in range(n):
        wrong = client.post("/api/auth/token", json={"username": "admin", "password": "x" * 12})
        assert wrong.status_code == 401


def test_a_locked_admin_gets_in_from_another_address(app: FastAPI) -> None:
    delays: list[float] = []
    app.state.ctx.throttle.sleep = delays.append
    with TestClient(app, client=("203.0.113.9", 40000)) as attacker:
        _fail_logins(attacker, 5)
        locked = attacker.post(
            "/api/auth/token", json={"username": "admin", "password": PASSWORDS["admin"]}
        )
        assert locked.status_code == 429
    assert delays == []
    with TestClient(app, client=("10.1.2.3", 50000)) as admin_desk:
        assert (
            admin_desk.get("/api/auth/me", headers=_token(admin_desk, "admin")).status_code == 200
        )
    assert delays == [app.state.ctx.throttle.new_address_delay_s]  # delayed, not refused


def test_the_lockout_grows_and_survives_a_restart(settings: ApiSettings) -> None:
    app = create_app(settings)
    with TestClient(app) as client:
        _fail_logins(client, 5)
        first = client.post("/api/auth/token", json={"username": "ADMIN", "password": "y" * 12})
        assert first.status_code == 429
        first_wait = int(first.headers["retry-after"])
    restarted = create_app(settings)
    with TestClient(restarted) as client:
        again = client.post(
            "/api/auth/token", json={"username": "admin", "password": PASSWORDS["admin"]}
        )
        assert again.status_code == 429
        assert 0 < int(again.headers["retry-after"]) <= first_wait


def test_usernames_are_unique_regardless_of_case(
    client: TestClient, auth: dict[str, dict[str, str]]
) -> None:
    body = {"username": "OPERATOR", "role": "operator", "password": "a-long-fresh-secret"}
    response = client.post("/api/users", json=body, headers=auth["admin"])
    assert response.status_code == 409
    assert "already taken" in response.json()["detail"]
    login = client.post(
        "/api/auth/token", json={"username": "Operator", "password": "operator-demo"}
    )
    assert login.status_code == 200 and login.json()["username"] == "operator"


def test_short_and_common_passwords_are_refused(
    client: TestClient, auth: dict[str, dict[str, str]]
) -> None:
    for password in (
        "elevenchars",
        "password1234",
        "Qwerty123456",
        "aaaaaaaaaaaaaaa",
        "new.person1",
    ):
        body = {"username": "new.person1", "role": "operator", "password": password}
        response = client.post("/api/users", json=body, headers=auth["admin"])
        assert response.status_code == 422, password
        assert password not in response.text
    body = {"username": "new.person1", "role": "operator", "password": "tangerine-orbit-42"}
    assert client.post("/api/users", json=body, headers=auth["admin"]).status_code == 201
    user_id = client.get("/api/auth/me", headers=auth["operator"]).json()["id"]
    patch = client.patch(
        f"/api/users/{user_id}", json={"password": "letmein12345"}, headers=auth["admin"]
    )
    assert patch.status_code == 422
