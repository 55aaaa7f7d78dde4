"""Invalid input gets a clear 4xx with the offending field, never a 5xx."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

BAD_GETS = [
    ("/api/review-queue?limit=0", 422, "limit"),
    ("/api/review-queue?limit=1000", 422, "limit"),
    ("/api/review-queue?limit=abc", 422, "limit"),
    ("/api/review-queue?station_id=-1", 422, "station_id"),
    ("/api/review-queue?station_id=99999999999999999999999", 422, "station_id"),
    ("/api/review-queue?since=yesterday", 422, "since"),
    ("/api/review-queue?min_score=nan", 422, "min_score"),
    ("/api/review-queue?min_score=inf", 422, "min_score"),
    ("/api/review-queue?cursor=not-a-cursor", 400, "cursor"),
    ("/api/review-queue?cursor=" + "A" * 500, 422, "cursor"),
    ("/api/review-queue?defect_type=" + "x" * 100, 422, "defect_type"),
    ("/api/inspections?offset=-5", 422, "offset"),
    ("/api/inspections?verdict=maybe", 422, "verdict"),
    ("/api/inspections/0", 422, "inspection_id"),
    ("/api/inspections/abc", 422, "inspection_id"),
    ("/api/inspections/18446744073709551616", 422, "inspection_id"),
    ("/api/inspections/999999", 404, "does not exist"),
    ("/api/inspections/999999/frame", 404, "does not exist"),
    ("/api/inspections/1/frame?max_side=1", 422, "max_side"),
    ("/api/stations/999/threshold-preview?image_threshold=0.5", 404, "does not exist"),
    ("/api/stations/1/threshold-preview", 422, "image_threshold"),
    ("/api/stations/1/threshold-preview?image_threshold=-1", 422, "image_threshold"),
    ("/api/models/compare?a=1", 422, "b"),
    ("/api/models/compare?a=1&b=999", 404, "does not exist"),
    ("/api/charts/yield?days=0", 422, "days"),
    ("/api/charts/scores?bins=100000", 422, "bins"),
    ("/api/nothing-here", 404, "nothing at"),
]


@pytest.mark.parametrize(("url", "status", "mentions"), BAD_GETS)
def test_bad_queries_are_clear_4xx(
    client: TestClient,
    auth: dict[str, dict[str, str]],
    url: str,
    status: int,
    mentions: str,
) -> None:
    response = client.get(url, headers=auth["engineer"])
    assert response.status_code == status, response.text
    assert mentions in response.json()["detail"]


BAD_BODIES = [
    ("POST", "/api/inspections/1/labels", {"verdict": "maybe"}, "verdict"),
    ("POST", "/api/inspections/1/labels", {}, "verdict"),
    (
        "POST",
        "/api/inspections/1/labels",
        {"verdict": "pass", "defect_type": "crack"},
        "only allowed",
    ),
    (
        "POST",
        "/api/inspections/1/labels",
        {"verdict": "fail", "defect_type": "../../x"},
        "defect_type",
    ),
    ("POST", "/api/inspections/1/labels", {"verdict": "fail", "defect_type": ""}, "defect_type"),
    ("POST", "/api/inspections/1/labels", {"verdict": "fail", "colour": "red"}, "colour"),
    ("POST", "/api/inspections/1/labels", ["fail"], "body"),
    ("PUT", "/api/stations/1/thresholds", {"image_threshold": -0.1}, "image_threshold"),
    ("PUT", "/api/stations/1/thresholds", {"image_threshold": "high"}, "image_threshold"),
    ("PUT", "/api/stations/1/thresholds", {}, "image_threshold"),
    (
        "POST",
        "/api/users",
        {"username": "x", "role": "operator", "password": "long-enough"},
        "username",
    ),
    (
        "POST",
        "/api/users",
        {"username": "newbie", "role": "boss", "password": "long-enough"},
        "role",
    ),
    (
        "POST",
        "/api/users",
        {"username": "newbie", "role": "operator", "password": "Xq9!z"},
        "password",
    ),
    ("POST", "/api/retrain-jobs", {"station_id": "one"}, "station_id"),
    ("POST", "/api/auth/token", {"username": "admin"}, "password"),
]


@pytest.mark.parametrize(("method", "url", "body", "mentions"), BAD_BODIES)
def test_bad_bodies_are_422_with_the_field(
    client: TestClient,
    auth: dict[str, dict[str, str]],
    method: str,
    url: str,
    body: object,
    mentions: str,
) -> None:
    response = client.request(method, url, json=body, headers=auth["admin"])
    assert response.status_code == 422, response.text
    payload = response.json()
    assert mentions in payload["detail"]
    assert payload["errors"]
    assert "long-enough" not in response.text
    assert "Xq9!z" not in response.text


def test_malformed_json_is_422(client: TestClient, auth: dict[str, dict[str, str]]) -> None:
    response = client.post(
        "/api/inspections/1/labels",
        content=b"{not json",
        headers={**auth["operator"], "Content-Type": "application/json"},
    )
    assert response.status_code == 422


@pytest.mark.parametrize(
    ("method", "url", "body", "status"),
    [
        ("POST", "/api/inspections/999999/labels", {"verdict": "pass"}, 404),
        ("DELETE", "/api/inspections/1/labels/latest", None, 404),
        ("POST", "/api/models/999/promote", None, 404),
        ("POST", "/api/stations/999/rollback", None, 404),
        ("POST", "/api/stations/1/rollback", None, 409),
        ("POST", "/api/stations/1/rollback", {"to_version_id": 999}, 404),
        ("POST", "/api/retrain-jobs", {"station_id": 999}, 404),
        ("POST", "/api/retrain-jobs/999/cancel", None, 404),
        ("PATCH", "/api/users/999", {"role": "admin"}, 404),
        (
            "POST",
            "/api/users",
            {"username": "operator", "role": "operator", "password": "a-fresh-long-secret"},
            409,
        ),
    ],
)
def test_missing_rows_and_illegal_changes(
    client: TestClient,
    auth: dict[str, dict[str, str]],
    method: str,
    url: str,
    body: object,
    status: int,
) -> None:
    response = client.request(method, url, json=body, headers=auth["admin"])
    assert response.status_code == status, response.text
    assert response.json()["detail"]


def test_promoting_the_active_model_is_a_conflict(
    client: TestClient, auth: dict[str, dict[str, str]]
) -> None:
    active = [
        m
        for m in client.get("/api/models", headers=auth["engineer"]).json()
        if m["status"] == "active"
    ]
    response = client.post(f"/api/models/{active[0]['id']}/promote", headers=auth["engineer"])
    assert response.status_code == 409
    assert "already active" in response.json()["detail"]


def test_html_pages_show_validation_errors_as_pages(
    client: TestClient, auth: dict[str, dict[str, str]]
) -> None:
    headers = {**auth["operator"], "Accept": "text/html"}
    response = client.get("/review?limit=zzz&station_id=abc", headers=headers)
    assert response.status_code == 422
    assert "text/html" in response.headers["content-type"]
    assert "station_id" in response.text
    response = client.get("/inspections/424242", headers=headers)
    assert response.status_code == 404
    assert "does not exist" in response.text
