"""#19 item 5: the UI shows the threshold a station actually applies and where it comes from
(the operators' override, the station's configuration file, or the model's calibration)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from inspection.api.server import RunningServer
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


@pytest.fixture(scope="module")
def file_threshold_station(
    shared_settings: ApiSettings, tmp_path_factory: pytest.TempPathFactory
) -> int:
    """A seeded station (with parts in the queue) restarted from a file that sets 0.9, with
    no operators' override: it applies the file's 0.9."""
    station_id = _start_station(
        shared_settings, tmp_path_factory.mktemp("station"), id="tile-glaze", image_threshold=0.9
    )
    engine = make_engine(shared_settings.database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE station SET image_threshold = NULL WHERE id = :id"), {"id": station_id}
            )
    finally:
        engine.dispose()
    return station_id


ON_SCREEN = (
    "node => { const r = node.getBoundingClientRect(); "
    "return r.width > 0 && r.left >= 0 && r.right <= innerWidth; }"
)


@pytest.mark.browser
@pytest.mark.slow
def test_pages_show_the_threshold_the_station_applies(
    tab: Any, shared_server: RunningServer, file_threshold_station: int
) -> None:
    """In the browser at the four viewports (a regression guard: item 5 landed in aeff037)."""
    page, base = tab("operator"), shared_server.url
    page.goto(f"{base}/stations")
    cell = page.locator("tr", has_text="tile-glaze").locator("[data-threshold-source]")
    assert " ".join(cell.inner_text().split()) == "0.900 (station config)"
    assert cell.evaluate(ON_SCREEN), "the applied threshold is off screen"

    page.goto(f"{base}/stations/{file_threshold_station}")
    applied = page.locator("#applied-threshold")
    assert "applies 0.900 (station config)" in " ".join(applied.inner_text().split())
    assert page.input_value("#image-threshold") == "0.900"

    page.goto(f"{base}/review?station_id={file_threshold_station}")
    page.wait_for_selector("#score-value")
    shown = page.locator(".score-big .muted")
    assert shown.inner_text() == "threshold 0.90"
    assert shown.evaluate(ON_SCREEN)
