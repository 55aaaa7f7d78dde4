"""#19 item 5: the UI shows the threshold a station actually applies and where it comes from
(the operators' override, the station's configuration file, or the model's calibration)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from inspection.api.settings import ApiSettings
from inspection.db.engine import make_engine, make_session_factory
from inspection.station.persist import register_station
from tests.station.conftest import make_config


def _start_station(settings: ApiSettings, tmp_path: Path, **config: object) -> int:
    """What a station does when it starts: register itself from its configuration file."""
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session, session.begin():
            return register_station(session, make_config(tmp_path, **config)).station_id
    finally:
        engine.dispose()


def test_a_station_running_at_its_files_threshold_shows_it(
    client: TestClient, auth: dict[str, dict[str, str]], settings: ApiSettings, tmp_path: Path
) -> None:
    station_id = _start_station(settings, tmp_path, id="station-b", image_threshold=0.9)
    out = client.get(f"/api/stations/{station_id}", headers=auth["operator"]).json()
    assert out["effective_image_threshold"] == 0.9
    assert out["image_threshold_source"] == "station config"
    assert out["image_threshold"] is None  # no operator override

    page = client.get("/stations", headers=auth["operator"])
    row = page.text.split("station-b", 1)[1].split("</tr>", 1)[0]
    assert "0.900" in row and "station config" in row and "(default)" not in row

    histogram = client.get(
        f"/api/charts/scores?station_id={station_id}", headers=auth["operator"]
    ).json()
    assert histogram["threshold"] == 0.9

    body = {"image_threshold": 0.7, "pixel_threshold": None}
    saved = client.put(
        f"/api/stations/{station_id}/thresholds", json=body, headers=auth["engineer"]
    )
    assert saved.status_code == 200, saved.text
    out = client.get(f"/api/stations/{station_id}", headers=auth["operator"]).json()
    assert (out["effective_image_threshold"], out["image_threshold_source"]) == (
        0.7,
        "UI override",
    )
    detail = client.get(f"/stations/{station_id}", headers=auth["operator"])
    assert "applies <strong>0.700</strong> (UI override; its file says 0.900)" in detail.text


def test_a_station_without_thresholds_runs_at_the_models_calibration(
    client: TestClient, auth: dict[str, dict[str, str]], settings: ApiSettings, tmp_path: Path
) -> None:
    station_id = _start_station(settings, tmp_path, id="station-c")
    out = client.get(f"/api/stations/{station_id}", headers=auth["operator"]).json()
    assert out["effective_image_threshold"] == 0.5
    assert out["image_threshold_source"] == "model calibration"
