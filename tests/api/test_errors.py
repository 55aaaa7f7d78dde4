"""Database trouble becomes 503 with a clear message; a stale schema stops the start-up."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import text

from inspection.api.app import create_app
from inspection.api.settings import ApiSettings
from inspection.db.engine import make_engine
from inspection.errors import SchemaOutOfDateError
from tests.api.conftest import SECRET


def test_unmigrated_database_refuses_to_start(tmp_path: Path) -> None:
    settings = ApiSettings(
        database_url=f"sqlite:///{tmp_path / 'empty.db'}", secret_key=SecretStr(SECRET)
    )
    with (
        pytest.raises(SchemaOutOfDateError, match="inspection db upgrade"),
        TestClient(create_app(settings)),
    ):
        pass


def test_database_errors_are_503_not_500(tmp_path: Path) -> None:
    settings = ApiSettings(
        database_url=f"sqlite:///{tmp_path / 'empty.db'}",
        secret_key=SecretStr(SECRET),
        check_schema=False,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.get("/api/health")
        assert response.status_code == 200  # SELECT 1 works on an empty database
        response = client.post("/api/auth/token", json={"username": "a", "password": "b"})
        assert response.status_code == 503
        assert "database unavailable" in response.json()["detail"]
        assert "no such table" in response.json()["detail"]
        assert response.headers["retry-after"] == "5"
        page = client.post(
            "/login", data={"username": "a", "password": "b"}, headers={"Accept": "text/html"}
        )
        assert page.status_code in (403, 503)


def test_dropped_table_mid_flight_is_503(
    client: TestClient, auth: dict[str, dict[str, str]], settings: ApiSettings
) -> None:
    engine = make_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE defect_region"))
    engine.dispose()
    response = client.get("/api/review-queue", headers=auth["operator"])
    assert response.status_code == 503
    assert "defect_region" in response.json()["detail"]
