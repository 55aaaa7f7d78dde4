"""HTTP-layer security of the review app (issue #19): bounded request bodies, Secure cookies,
strict threshold numbers, foreign origins refused, pages never cached, a token for /metrics."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy.orm import Session

from inspection.api.app import create_app
from inspection.api.settings import ApiSettings
from inspection.db.models import Station
from tests.api.conftest import PASSWORDS, count, ui_login

KIB = 1024


# -- request bodies ------------------------------------------------------------------------


def test_declared_oversized_bodies_are_refused_without_reading_them(app: FastAPI) -> None:
    """A 100 MiB Content-Length is answered 413 before one byte is received."""

    async def call(path: str, content_type: bytes) -> list[dict[str, object]]:
        sent: list[dict[str, object]] = []

        async def receive() -> dict[str, object]:
            raise AssertionError("the body was read")

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"testserver"),
                (b"content-type", content_type),
                (b"content-length", str(100 * 1024 * KIB).encode()),
            ],
            "client": ("127.0.0.1", 1234),
            "server": ("testserver", 80),
        }
        await app(scope, receive, send)  # type: ignore[arg-type]
        return sent

    for path, content_type in [
        ("/api/auth/token", b"application/json"),
        ("/api/inspections/1/labels", b"application/json"),
        ("/login", b"multipart/form-data; boundary=x"),
        ("/stations/1/thresholds", b"application/x-www-form-urlencoded"),
    ]:
        sent = asyncio.run(call(path, content_type))
        assert sent[0]["status"] == 413, path
        assert "too large" in json.loads(sent[1]["body"])["detail"]  # type: ignore[arg-type]


def _stream(size: int) -> Iterator[bytes]:
    """A body without Content-Length (chunked), ``size`` bytes in 8 KiB pieces."""
    chunk = b"x" * (8 * KIB)
    for _ in range(size // len(chunk) + 1):
        yield chunk


@pytest.mark.parametrize(
    ("method", "path", "content_type", "size", "kind"),
    [
        ("POST", "/api/auth/token", "application/json", 20 * KIB, "auth"),
        ("POST", "/login", "application/x-www-form-urlencoded", 20 * KIB, "auth"),
        ("POST", "/login", "multipart/form-data; boundary=xyz", 20 * KIB, "auth"),
        ("PUT", "/api/stations/1/thresholds", "application/json", 2048 * KIB, "api"),
        ("POST", "/stations/1/thresholds", "multipart/form-data; boundary=xyz", 300 * KIB, "form"),
    ],
)
def test_bodies_above_the_route_kinds_limit_are_413_declared_or_streamed(
    client: TestClient, method: str, path: str, content_type: str, size: int, kind: str
) -> None:
    # anonymous on purpose: the limit holds before authentication
    headers = {"Content-Type": content_type}
    declared = client.request(method, path, content=b"x" * size, headers=headers)
    assert declared.status_code == 413, declared.text[:200]
    assert f"for {kind} requests" in declared.json()["detail"]
    streamed = client.request(method, path, content=_stream(size), headers=headers)
    assert streamed.status_code == 413, streamed.text[:200]


def test_bodies_within_the_limits_still_work(
    client: TestClient, auth: dict[str, dict[str, str]]
) -> None:
    token = client.post(
        "/api/auth/token", json={"username": "operator", "password": PASSWORDS["operator"]}
    )
    assert token.status_code == 200
    note = {"verdict": "fail", "defect_type": "crack", "note": "n" * 900}
    labelled = client.post("/api/inspections/1/labels", json=note, headers=auth["operator"])
    assert labelled.status_code == 201, labelled.text


# -- cookies -------------------------------------------------------------------------------


def test_every_cookie_is_secure_when_secure_cookies_are_configured(
    settings: ApiSettings,
) -> None:
    secure = settings.model_copy(update={"cookie_secure": True})
    cookies: list[str] = []
    with TestClient(create_app(secure), base_url="https://testserver") as client:
        client.event_hooks["response"] = [
            lambda r: cookies.extend(r.headers.get_list("set-cookie"))
        ]
        page = client.get("/login")
        assert page.status_code == 200
        token = re.search(r'name="login_csrf" value="([^"]+)"', page.text)
        assert token is not None
        wrong = client.post(
            "/login",
            data={"username": "engineer", "password": "nope", "login_csrf": token.group(1)},
        )
        assert wrong.status_code == 401  # re-issues the login CSRF cookie
        csrf = ui_login(client, "engineer")
        saved = client.post(  # a flash message cookie, then its deletion
            "/stations/1/thresholds",
            data={"csrf_token": csrf, "image_threshold": "0.55", "confirmed": "yes"},
        )
        assert saved.status_code == 200
        client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    names = {c.split("=", 1)[0] for c in cookies}
    assert {"inspection_login_csrf", "inspection_session", "inspection_flash"} <= names
    insecure = [c for c in cookies if "secure" not in c.lower().split("; ")]
    assert not insecure, insecure


# -- strict numbers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"image_threshold": True},
        {"image_threshold": "0.6"},
        {"image_threshold": 0.6, "pixel_threshold": False},
        {"image_threshold": 0.6, "pixel_threshold": "0.4"},
    ],
)
def test_threshold_fields_reject_booleans_and_strings(
    client: TestClient, session: Session, auth: dict[str, dict[str, str]], body: dict[str, object]
) -> None:
    response = client.put("/api/stations/1/thresholds", json=body, headers=auth["engineer"])
    assert response.status_code == 422, response.text
    station = session.get(Station, 1)
    assert station is not None and station.image_threshold == pytest.approx(0.5)


def test_threshold_fields_take_json_numbers(
    client: TestClient, auth: dict[str, dict[str, str]]
) -> None:
    for value in (1, 0.6):
        response = client.put(
            "/api/stations/1/thresholds", json={"image_threshold": value}, headers=auth["engineer"]
        )
        assert response.status_code == 200, response.text
        assert response.json()["effective_image_threshold"] == pytest.approx(value)


# -- origins -------------------------------------------------------------------------------


def test_state_changes_from_a_foreign_origin_are_refused(
    client: TestClient, session: Session, auth: dict[str, dict[str, str]]
) -> None:
    csrf = ui_login(client, "operator")
    label = {"verdict": "pass"}
    cookie_headers = {"X-CSRF-Token": csrf}
    before = count(session, "SELECT count(*) FROM operator_label")
    for origin in ("https://evil.example", "null", "http://testserver.evil.example"):
        for headers in (cookie_headers, auth["operator"]):
            refused = client.post(
                "/api/inspections/1/labels", json=label, headers={**headers, "Origin": origin}
            )
            assert refused.status_code == 403, (origin, refused.text)
            assert "cross-site" in refused.json()["detail"]
    anonymous = client.post(
        "/api/auth/token",
        json={"username": "operator", "password": PASSWORDS["operator"]},
        headers={"Origin": "https://evil.example"},
    )
    assert anonymous.status_code == 403
    assert count(session, "SELECT count(*) FROM operator_label") == before
    same = client.post(
        "/api/inspections/1/labels",
        json=label,
        headers={**cookie_headers, "Origin": "http://testserver"},
    )
    assert same.status_code == 201, same.text
    no_origin = client.post("/api/inspections/2/labels", json=label, headers=auth["operator"])
    assert no_origin.status_code == 201
    reads = client.get("/api/auth/me", headers={**auth["operator"], "Origin": "https://x.example"})
    assert reads.status_code == 200  # only state changes are refused


def test_a_trusted_origin_behind_a_proxy_is_accepted(settings: ApiSettings) -> None:
    proxied = settings.model_copy(update={"trusted_origins": ["https://inspection.plant.example"]})
    with TestClient(create_app(proxied)) as client:
        response = client.post(
            "/api/auth/token",
            json={"username": "operator", "password": PASSWORDS["operator"]},
            headers={"Origin": "https://inspection.plant.example"},
        )
        assert response.status_code == 200


# -- caching -------------------------------------------------------------------------------


def test_html_pages_are_never_cached(client: TestClient) -> None:
    login_page = client.get("/login")
    assert login_page.headers["cache-control"] == "no-store"
    ui_login(client, "operator")
    for path in ("/", "/review", "/inspections/1", "/nowhere"):
        page = client.get(path, headers={"Accept": "text/html"})
        assert page.headers["content-type"].startswith("text/html"), path
        assert page.headers["cache-control"] == "no-store", path
    assert "no-store" not in client.get("/static/app.css").headers.get("cache-control", "")


# -- metrics -------------------------------------------------------------------------------


def test_metrics_need_the_token_and_are_off_without_one(settings: ApiSettings) -> None:
    with TestClient(create_app(settings)) as client:  # the fixture sets a token
        assert client.get("/metrics").status_code == 401
        wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert settings.metrics_token is not None
        token = settings.metrics_token.get_secret_value()
        right = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert right.status_code == 200 and "inspection_api_requests_total" in right.text
    off = settings.model_copy(update={"metrics_token": None})
    with TestClient(create_app(off)) as client:
        response = client.get("/metrics")
        assert response.status_code == 404 and "METRICS_TOKEN" in response.json()["detail"]
    public = settings.model_copy(update={"metrics_token": None, "metrics_public": True})
    with TestClient(create_app(public)) as client:
        assert client.get("/metrics").status_code == 200


def test_metrics_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSPECTION_API_METRICS_TOKEN", "scrape-me")
    settings = ApiSettings(database_url="sqlite://")
    assert settings.metrics_token == SecretStr("scrape-me")
    monkeypatch.setenv("INSPECTION_API_METRICS_TOKEN", "")
    assert ApiSettings(database_url="sqlite://").metrics_token is None  # empty: off, not open
