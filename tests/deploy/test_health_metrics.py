"""Liveness, readiness and Prometheus metrics of the API and of the stations."""

from __future__ import annotations

import datetime as dt
import socket
import time
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from inspection.api.app import create_app
from inspection.api.settings import ApiSettings
from inspection.db import migrate, repo
from inspection.db.engine import make_engine, make_session_factory, run_in_transaction
from inspection.db.models import Verdict
from inspection.errors import ConfigError
from inspection.station import metrics as station_metrics
from inspection.station.persist import register_station
from tests.station.conftest import make_config, make_station
from tests.station.sources_fakes import ScriptedSource, flat

SECRET = "deploy-test-secret-" + "x" * 32


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (name, tuple(sorted(labels.items())))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _settings(url: str, **kw: object) -> ApiSettings:
    return ApiSettings(  # type: ignore[arg-type]
        database_url=url, secret_key=SecretStr(SECRET), metrics_public=True, **kw
    )


def test_ready_and_metrics_on_a_migrated_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    factory = make_session_factory(engine)
    cfg = make_config(tmp_path)
    now = dt.datetime.now(dt.UTC)

    def seed(session) -> None:
        ids = register_station(session, cfg)
        repo.record_inspections(
            session,
            [
                repo.InspectionData(
                    station_id=ids.station_id,
                    captured_at=now - dt.timedelta(seconds=i),
                    frame_ref=f"f{i}",
                    model_version_id=None,
                    raw_score=0.1,
                    norm_score=0.9 if i % 4 == 0 else 0.1,
                    verdict=Verdict.FAIL if i % 4 == 0 else Verdict.PASS,
                    latency_ms=10.0 + i,
                    idempotency_key=f"k{i}",
                )
                for i in range(8)
            ],
        )

    run_in_transaction(factory, seed)
    engine.dispose()
    with TestClient(create_app(_settings(url, artifact_root=tmp_path / "a"))) as client:
        assert client.get("/api/health").json() == {"status": "ok"}
        ready = client.get("/api/ready")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "schema_revision": migrate.head_revision()}
        client.get("/api/stations")  # a 401, counted under its route
        response = client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        samples = _samples(response.text)
    station = (("station", "s1"),)
    assert samples[("inspection_api_database_up", ())] == 1
    assert samples[("inspection_stored_per_second", station)] == pytest.approx(8 / 300)
    assert samples[("inspection_anomaly_rate", station)] == pytest.approx(2 / 8)
    assert samples[("inspection_stored_latency_ms", (("stat", "max"), *station))] == 17.0
    key = (
        "inspection_api_requests_total",
        (("method", "GET"), ("route", "/api/stations"), ("status", "401")),
    )
    assert samples[key] == 1


def test_ready_is_503_when_the_schema_is_behind(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    with TestClient(
        create_app(_settings(url, check_schema=False)), raise_server_exceptions=False
    ) as client:
        response = client.get("/api/ready")
        assert response.status_code == 503
        assert "no schema" in response.json()["detail"]
        assert client.get("/api/health").status_code == 200


def test_database_down_health_ok_ready_503_metrics_still_answer() -> None:
    url = f"postgresql+psycopg://nobody:secret@127.0.0.1:{_free_port()}/x?connect_timeout=2"
    with TestClient(
        create_app(_settings(url, check_schema=False)), raise_server_exceptions=False
    ) as client:
        assert client.get("/api/health").status_code == 200
        ready = client.get("/api/ready")
        assert ready.status_code == 503
        assert "database unavailable" in ready.json()["detail"]
        assert "secret" not in ready.text  # no password in the answer
        response = client.get("/metrics")
        assert response.status_code == 200
        assert _samples(response.text)[("inspection_api_database_up", ())] == 0


def test_station_metrics_endpoint(tmp_path: Path, db, monkeypatch: pytest.MonkeyPatch) -> None:
    _, factory = db
    port = _free_port()
    monkeypatch.setenv("INSPECTION_METRICS_PORT", str(port))
    monkeypatch.setenv("INSPECTION_SPOOL_DIR", str(tmp_path / "spool"))
    station = make_station(
        make_config(tmp_path), factory, source=ScriptedSource([flat(10)] * 4 + [flat(250)] * 2)
    )
    station.start()
    try:
        while station.counters.get("persisted") < 6:
            time.sleep(0.01)
        if station_metrics._server is not None:
            port = station_metrics._server[1]  # an earlier test in this process started it
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            samples = _samples(r.read().decode())
    finally:
        station.stop()
    assert samples[_key("inspection_station_frames_total", station="s1", stage="scored")] == 6
    assert samples[_key("inspection_station_anomaly_rate", station="s1")] == pytest.approx(2 / 6)
    assert _key("inspection_station_spool_records", station="s1") in samples
    assert _key("inspection_station_queue_depth", station="s1", queue="frames") in samples
    assert samples[_key("inspection_station_events_total", station="s1", event="dropped")] == 0
    assert station not in station_metrics.COLLECTOR.stations()


def test_metrics_address_from_environment() -> None:
    assert station_metrics.metrics_address({}) is None
    assert station_metrics.metrics_address({"INSPECTION_METRICS_PORT": "9108"}) == (
        "127.0.0.1",
        9108,
    )
    env = {"INSPECTION_METRICS_PORT": "9108", "INSPECTION_METRICS_ADDR": "0.0.0.0"}
    assert station_metrics.metrics_address(env) == ("0.0.0.0", 9108)
    for bad in ("x", "0", "70000"):
        with pytest.raises(ConfigError):
            station_metrics.metrics_address({"INSPECTION_METRICS_PORT": bad})
