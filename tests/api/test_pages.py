"""Server-rendered pages: they render for the right roles and their forms change data."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from inspection.db.models import ModelStatus, ModelVersion, Station
from tests.api.conftest import count, ui_login

PAGES = [
    ("/", "Line overview"),
    ("/review", "Review queue"),
    (
        "/review?station_id=1&min_score=0.3&include_labelled=true&since=2020-01-01T00:00",
        "Review queue",
    ),
    ("/inspections/1", "Inspection #1"),
    ("/charts", "Defect Pareto"),
    ("/charts?station_id=2&days=1", "Score histogram"),
    ("/models", "Model versions"),
    ("/models?a=1&b=2", "Compare:"),
    ("/stations", "Stations"),
    ("/stations/1", "Would flip"),
    ("/audit", "Audit log"),
    ("/admin/users", "New account"),
    ("/docs", "/api/review-queue"),
]


@pytest.mark.parametrize(("path", "marker"), PAGES)
def test_pages_render_for_admin(client: TestClient, path: str, marker: str) -> None:
    ui_login(client, "admin")
    response = client.get(path)
    assert response.status_code == 200, response.text[:2000]
    assert marker in response.text
    assert "content-security-policy" in response.headers
    assert "http://" not in re.sub(r'href="http://testserver', "", response.text.split("<body")[1])
    assert "https://" not in response.text


def test_operator_sees_no_admin_pages(client: TestClient) -> None:
    ui_login(client, "operator")
    assert client.get("/admin/users").status_code == 403
    assert client.get("/audit").status_code == 403
    page = client.get("/")
    assert "/admin/users" not in page.text
    models = client.get("/models")
    assert "Promote</button>" not in models.text


def test_review_page_embeds_the_first_queue_page(client: TestClient) -> None:
    ui_login(client, "operator")
    page = client.get("/review")
    match = re.search(
        r'<script type="application/json" id="page-data">(.*?)</script>', page.text, re.S
    )
    assert match is not None
    import json

    data = json.loads(match.group(1))
    assert len(data["items"]) == 50
    assert data["items"][0]["has_unknown"] is True
    station = str(data["items"][0]["station_id"])  # keys are per station
    assert sorted(t["keys"][station] for t in data["defect_types"]) == [1, 2, 3, 4, 5]


def test_threshold_form_saves_and_audits(client: TestClient, session: Session) -> None:
    csrf = ui_login(client, "engineer")
    response = client.post(
        "/stations/1/thresholds",
        data={
            "csrf_token": csrf,
            "image_threshold": "0.62",
            "pixel_threshold": "",
            "confirmed": "yes",
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    page = client.get("/stations/1")
    assert "Thresholds saved" in page.text
    session.rollback()
    station = session.get(Station, 1)
    assert station is not None and station.image_threshold == pytest.approx(0.62)
    assert (
        count(session, "SELECT count(*) FROM audit_log WHERE action = 'station.set_thresholds'")
        == 1
    )
    bad = client.post(
        "/stations/1/thresholds",
        data={"csrf_token": csrf, "image_threshold": "lots"},
        follow_redirects=True,
    )
    assert "must be a number" in bad.text


def test_promote_rollback_and_retrain_forms(client: TestClient, session: Session) -> None:
    csrf = ui_login(client, "engineer")
    candidate = session.scalar(
        select(ModelVersion).where(
            ModelVersion.station_id == 1, ModelVersion.status == ModelStatus.CANDIDATE
        )
    )
    assert candidate is not None
    yes = {"csrf_token": csrf, "confirmed": "yes"}
    page = client.post(f"/models/{candidate.id}/promote", data=yes)
    assert "is now active" in page.text
    page = client.post("/stations/1/rollback", data=yes)
    assert "Rolled back" in page.text
    session.rollback()
    assert session.get(ModelVersion, candidate.id).status == ModelStatus.RETIRED  # type: ignore[union-attr]
    page = client.post("/stations/1/rollback", data=yes)
    assert "Rolled back" in page.text  # back to the candidate, which was active before
    page = client.post("/retrain-jobs", data={"csrf_token": csrf, "station_id": "1"})
    assert "queued" in page.text
    job = re.search(r"Retraining job (\d+) queued", page.text)
    assert job is not None
    page = client.post(f"/retrain-jobs/{job.group(1)}/cancel", data={"csrf_token": csrf})
    assert "cancel requested" in page.text
    assert count(session, "SELECT count(*) FROM retrain_job WHERE status = 'cancelled'") == 1


def test_user_admin_forms(client: TestClient, session: Session) -> None:
    csrf = ui_login(client, "admin")
    page = client.post(
        "/admin/users",
        data={
            "csrf_token": csrf,
            "username": "anna",
            "role": "operator",
            "password": "anna-pass-long",
        },
    )
    assert "Account anna created" in page.text
    page = client.post(
        "/admin/users",
        data={
            "csrf_token": csrf,
            "username": "b",
            "role": "operator",
            "password": "anna-pass-long",
        },
    )
    assert "Usernames are" in page.text
    page = client.post(
        "/admin/users",
        data={"csrf_token": csrf, "username": "bob", "role": "operator", "password": "short"},
    )
    assert "at least 12" in page.text
    page = client.post(
        "/admin/users",
        data={
            "csrf_token": csrf,
            "username": "bob",
            "role": "operator",
            "password": "password1234",
        },
    )
    assert "too common" in page.text
    anna = count(session, "SELECT id FROM users WHERE username = 'anna'")
    page = client.post(f"/admin/users/{anna}", data={"csrf_token": csrf, "role": "engineer"})
    assert "Account updated" in page.text
    assert (
        count(session, "SELECT count(*) FROM users WHERE username = 'anna' AND role = 'engineer'")
        == 1
    )
    page = client.post(f"/admin/users/{anna}/sign-out-everywhere", data={"csrf_token": csrf})
    assert "anna was signed out everywhere" in page.text


def test_detail_page_links_the_stations_neighbours_in_capture_order(
    client: TestClient, session: Session
) -> None:
    from inspection.db.models import Inspection

    ui_login(client, "operator")
    rows = (
        session.execute(
            select(Inspection.id).where(Inspection.station_id == 2).order_by(Inspection.captured_at)
        )
        .scalars()
        .all()
    )
    middle = rows[len(rows) // 2]
    page = client.get(f"/inspections/{middle}")
    prev_link = re.search(r'href="/inspections/(\d+)" id="prev-link"', page.text)
    next_link = re.search(r'href="/inspections/(\d+)" id="next-link"', page.text)
    assert prev_link is not None and next_link is not None
    assert int(prev_link.group(1)) == rows[len(rows) // 2 - 1]
    assert int(next_link.group(1)) == rows[len(rows) // 2 + 1]
    first = client.get(f"/inspections/{rows[0]}")
    assert 'id="prev-link"' not in first.text


def test_models_page_shows_why_auto_chose_a_detector(client: TestClient, session: Session) -> None:
    version = session.scalars(select(ModelVersion).order_by(ModelVersion.id)).first()
    assert version is not None
    version.config = {
        **(version.config or {}),
        "auto_selection": {
            "chosen": "patchcore@320",
            "reason": "patchcore@320 separated painted from clean validation images best",
            "validation": "subtle synthetic defects painted onto held-out normal images",
            "candidates": {
                "padim": {"image_auroc": 0.81, "fit_seconds": 20.0},
                "patchcore@320": {"image_auroc": 0.97, "fit_seconds": 140.0},
            },
        },
    }
    session.commit()
    ui_login(client, "operator")
    page = client.get("/models").text
    assert "chosen by <em>auto</em>: patchcore@320" in page
    assert "0.810" in page and "0.970" in page and "separated painted" in page


def test_models_page_shows_the_typer_operating_point(client: TestClient, session: Session) -> None:
    version = session.scalars(select(ModelVersion).order_by(ModelVersion.id)).first()
    assert version is not None
    version.config = {
        **(version.config or {}),
        "typer_operating_point": {
            "method": "knn",
            "classes": ["crack", "dent"],
            "threshold": 0.4321,
            "known_accept_rate_target": 0.95,
            "known_accept_rate_oof": 0.952,
            "oof_accuracy": 0.917,
            "folds": 5,
            "n_train": 120,
        },
    }
    session.commit()
    ui_login(client, "operator")
    page = client.get("/models").text
    assert "typer knn: unknown above 0.4321, 95% of known types kept" in page
    assert "0.952" in page and "0.917" in page and "crack, dent" in page


def test_error_pages_keep_the_navigation_bar(client: TestClient) -> None:
    ui_login(client, "engineer")
    html = {"Accept": "text/html"}
    for path, status in [("/inspections/999999", 404), ("/admin/users", 403)]:
        page = client.get(path, headers=html)
        assert page.status_code == status
        assert '<nav aria-label="Main">' in page.text and 'href="/review"' in page.text, path
        assert "Log out" in page.text


def test_image_threshold_has_one_range_in_form_api_and_preview(
    client: TestClient, session: Session, auth: dict[str, dict[str, str]]
) -> None:
    csrf = ui_login(client, "engineer")
    page = client.get("/stations/1").text
    number = re.search(r'<input type="number" name="image_threshold"[^>]*>', page)
    slider = re.search(r'<input type="range" id="threshold-slider"[^>]*>', page)
    assert number is not None and slider is not None
    bounds = [
        [float(re.search(rf'{k}="([^"]+)"', tag.group(0)).group(1)) for k in ("min", "max")]  # type: ignore[union-attr]
        for tag in (number, slider)
    ]
    assert bounds[0] == bounds[1] == [0.0, 1.0]
    saved = client.post(
        "/stations/1/thresholds",
        data={"csrf_token": csrf, "image_threshold": "100"},
        follow_redirects=False,
    )
    assert saved.status_code == 303 and "between 0 and 1" in client.get("/stations/1").text
    station = session.get(Station, 1)
    assert station is not None and station.image_threshold == pytest.approx(0.5)
    put = client.put(
        "/api/stations/1/thresholds", json={"image_threshold": 1.5}, headers=auth["engineer"]
    )
    assert put.status_code == 422
    preview = client.get(
        "/api/stations/1/threshold-preview?image_threshold=1.5", headers=auth["engineer"]
    )
    assert preview.status_code == 422


def test_promote_rollback_and_threshold_forms_carry_a_confirmation(client: TestClient) -> None:
    ui_login(client, "engineer")
    models = client.get("/models").text
    promote = re.search(r'<form method="post" action="/models/\d+/promote"[^>]*>', models)
    assert promote is not None and "data-confirm=" in promote.group(0)
    assert "becomes the active model" in promote.group(0)
    rollback = re.search(r'<form method="post" action="/stations/\d+/rollback"[^>]*>', models)
    assert rollback is not None and "data-confirm=" in rollback.group(0)
    station = client.get("/stations/1").text
    assert re.search(r'<form[^>]*id="threshold-form"[^>]*data-confirm=', station)
    assert '<script type="module" src="/static/js/confirm.js">' in models


def test_unconfirmed_changes_change_nothing_and_the_server_names_them(
    client: TestClient, session: Session
) -> None:
    """Promote, roll back and save thresholds posted without ``confirmed=yes`` (a browser
    without JavaScript) answer with a page naming the change, whose button posts it confirmed."""
    csrf = ui_login(client, "engineer")

    def active() -> ModelVersion:
        session.rollback()
        found = session.scalar(
            select(ModelVersion).where(
                ModelVersion.station_id == 1, ModelVersion.status == ModelStatus.ACTIVE
            )
        )
        assert found is not None
        return found

    def confirm_form(page: str) -> dict[str, str]:
        """The hidden fields of the confirmation page's form (what its button posts)."""
        form = page.split('id="confirm-message"', 1)[1].split("</form>", 1)[0]
        return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form))

    before = active()
    candidate = session.scalar(
        select(ModelVersion).where(
            ModelVersion.station_id == 1, ModelVersion.status == ModelStatus.CANDIDATE
        )
    )
    assert candidate is not None
    asked = client.post(f"/models/{candidate.id}/promote", data={"csrf_token": csrf})
    assert asked.status_code == 200
    assert f"Promote {candidate.name} (#{candidate.id}) on station" in asked.text
    assert f"replacing {before.name} (#{before.id})" in asked.text
    assert active().id == before.id, "promoted without a confirmation"
    fields = confirm_form(asked.text)
    assert fields == {"csrf_token": csrf, "confirmed": "yes"}
    done = client.post(f"/models/{candidate.id}/promote", data=fields, follow_redirects=False)
    assert done.status_code == 303 and active().id == candidate.id

    asked = client.post("/stations/1/rollback", data={"csrf_token": csrf})
    assert asked.status_code == 200
    assert f"{candidate.name} (#{candidate.id}) is retired" in asked.text
    assert f"{before.name} (#{before.id}) becomes active" in asked.text
    assert active().id == candidate.id, "rolled back without a confirmation"
    client.post("/stations/1/rollback", data=confirm_form(asked.text), follow_redirects=False)
    assert active().id == before.id

    asked = client.post(
        "/stations/1/thresholds",
        data={"csrf_token": csrf, "image_threshold": "0.42", "pixel_threshold": ""},
    )
    assert asked.status_code == 200
    assert "image threshold 0.500 → 0.420" in asked.text
    assert "would change verdict" in asked.text
    session.rollback()
    assert session.get(Station, 1).image_threshold == pytest.approx(0.5)  # type: ignore[union-attr]
    fields = confirm_form(asked.text)
    assert fields["image_threshold"] == "0.42" and fields["confirmed"] == "yes"
    client.post("/stations/1/thresholds", data=fields, follow_redirects=False)
    session.rollback()
    assert session.get(Station, 1).image_threshold == pytest.approx(0.42)  # type: ignore[union-attr]
