"""Aggregates behind the pages: threshold preview, charts, overview; and the SVG charts."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from inspection.api import charts
from inspection.db.models import Verdict
from inspection.services import line_stats
from tests.api.conftest import count


def test_threshold_preview_counts_flips(
    client: TestClient, auth: dict[str, dict[str, str]], session: Session
) -> None:
    for proposed in (0.3, 0.5, 0.7):
        result = client.get(
            f"/api/stations/1/threshold-preview?image_threshold={proposed}",
            headers=auth["operator"],
        ).json()
        to_fail = count(
            session,
            "SELECT count(*) FROM inspection WHERE station_id = 1 AND verdict = 'pass' AND norm_score >= :t",
            t=proposed,
        )
        to_pass = count(
            session,
            "SELECT count(*) FROM inspection WHERE station_id = 1 AND verdict = 'fail' AND norm_score < :t",
            t=proposed,
        )
        assert (result["to_fail"], result["to_pass"]) == (to_fail, to_pass)
        assert result["flips"] == to_fail + to_pass
        assert result["total"] == count(
            session, "SELECT count(*) FROM inspection WHERE station_id = 1"
        )
    assert (
        client.get(
            "/api/stations/1/threshold-preview?image_threshold=0.5", headers=auth["operator"]
        ).json()["flips"]
        == 0
    )


def test_threshold_change_is_audited(
    client: TestClient, auth: dict[str, dict[str, str]], session: Session
) -> None:
    response = client.put(
        "/api/stations/1/thresholds",
        json={"image_threshold": 0.55, "pixel_threshold": 0.4},
        headers=auth["engineer"],
    )
    assert response.status_code == 200
    assert response.json()["effective_image_threshold"] == pytest.approx(0.55)
    reset = client.put(
        "/api/stations/1/thresholds", json={"image_threshold": None}, headers=auth["engineer"]
    )
    assert reset.json()["effective_image_threshold"] == 0.5
    assert (
        count(
            session,
            "SELECT count(*) FROM audit_log WHERE action = 'station.set_thresholds' AND actor = 'engineer'",
        )
        == 2
    )


def test_chart_endpoints_add_up(
    client: TestClient, auth: dict[str, dict[str, str]], session: Session
) -> None:
    total = count(session, "SELECT count(*) FROM inspection")
    fails = count(session, "SELECT count(*) FROM inspection WHERE verdict = 'fail'")
    series = client.get("/api/charts/yield?days=2", headers=auth["operator"]).json()
    assert series["bucket"] == "hour"
    assert sum(p["n_pass"] + p["n_fail"] for p in series["points"]) == total
    assert sum(p["n_fail"] for p in series["points"]) == fails
    hist = client.get("/api/charts/scores?station_id=1", headers=auth["operator"]).json()
    assert sum(sum(v) for v in hist["counts"].values()) == count(
        session, "SELECT count(*) FROM inspection WHERE station_id = 1"
    )
    assert hist["threshold"] == 0.5
    pareto = client.get("/api/charts/pareto", headers=auth["operator"]).json()
    assert sum(r["count"] for r in pareto) == count(session, "SELECT count(*) FROM defect_region")
    assert [r["count"] for r in pareto] == sorted((r["count"] for r in pareto), reverse=True)


def test_overview_counts(
    client: TestClient, auth: dict[str, dict[str, str]], session: Session
) -> None:
    rows = client.get("/api/overview", headers=auth["operator"]).json()
    assert sum(r["n_pass"] + r["n_fail"] for r in rows) == count(
        session, "SELECT count(*) FROM inspection"
    )
    assert all(r["health"] in {"ok", "idle"} for r in rows)
    assert all(len(r["latest_ids"]) == 6 for r in rows)
    assert all(r["active_model"]["status"] == "active" for r in rows)


def test_station_summary_health_states(session: Session) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    summaries = line_stats.station_summaries(session, now=later)
    assert {s.health for s in summaries} == {"offline"}
    assert all(s.total == 0 for s in summaries)


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def test_svg_charts_are_well_formed_and_escape_text() -> None:
    points = [
        line_stats.YieldPoint(dt.datetime(2025, 1, 1, h, tzinfo=dt.UTC), 90 + h, 10 - h)
        for h in range(8)
    ]
    _parse(charts.yield_chart(points, "hour"))
    hist = line_stats.Histogram(
        hi=1.0,
        bins=4,
        counts={"ok": [1, 2, 0, 0], "defect": [0, 0, 3, 9], "unlabelled": [5, 0, 0, 1]},
    )
    root = _parse(charts.histogram_chart(hist, 0.5, proposed=0.7))
    assert root.get("data-hi") == "1.0"
    evil = charts.pareto_chart([("<script>alert(1)</script>", 3), ("unknown", 1)])
    assert "<script>" not in evil
    _parse(evil)
    assert "No inspections" in charts.pareto_chart([])
    _parse(charts.score_bar(0.7, 0.5))
    assert charts.fmt_ago(None) == "never"
    assert Verdict.PASS.value == "pass"
