"""Labelling through the API: stored, audited, undone, new types created."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from inspection.db.models import AuditLog, DefectType, OperatorLabel, Verdict
from tests.api.conftest import count


def test_label_undo_and_history(
    client: TestClient, auth: dict[str, dict[str, str]], session: Session
) -> None:
    item = client.get("/api/review-queue?limit=1", headers=auth["operator"]).json()["items"][0]
    url = f"/api/inspections/{item['id']}/labels"
    first = client.post(
        url, json={"verdict": "fail", "defect_type": "crack"}, headers=auth["operator"]
    )
    assert first.status_code == 201
    assert first.json()["defect_type"] == "crack" and first.json()["user"] == "operator"
    second = client.post(url, json={"verdict": "pass", "note": "glare"}, headers=auth["operator"])
    assert second.status_code == 201
    labels = client.get(url, headers=auth["operator"]).json()
    assert [x["verdict"] for x in labels] == ["fail", "pass"]

    undo = client.delete(f"{url}/latest", headers=auth["operator"])
    assert undo.status_code == 200
    assert undo.json()["undone"]["verdict"] == "pass"
    session.rollback()
    rows = session.scalars(
        select(OperatorLabel).where(OperatorLabel.inspection_id == item["id"])
    ).all()
    assert [r.verdict for r in rows] == [Verdict.FAIL]

    detail = client.get(f"/api/inspections/{item['id']}", headers=auth["operator"]).json()
    assert detail["label"]["verdict"] == "fail"
    assert [h["action"] for h in detail["history"]] == ["label.undo", "label.add", "label.add"]
    assert detail["history"][0]["before"]["note"] == "glare"
    assert client.delete(f"{url}/latest", headers=auth["engineer"]).status_code == 404


def test_new_defect_type_is_created_and_gets_a_key(
    client: TestClient, auth: dict[str, dict[str, str]], session: Session
) -> None:
    station = client.get("/api/inspections/2", headers=auth["operator"]).json()["station_id"]
    types = f"/api/defect-types?station_id={station}"  # keys are per station
    before = client.get(types, headers=auth["operator"]).json()
    response = client.post(
        "/api/inspections/2/labels",
        json={"verdict": "fail", "defect_type": "  Burr "},
        headers=auth["operator"],
    )
    assert response.status_code == 201
    assert response.json()["defect_type"] == "burr"
    after = client.get(types, headers=auth["operator"]).json()
    assert len(after) == len(before) + 1
    # the others keep their keys at this station (no re-sorting by name)
    assert [(t["name"], t["key"]) for t in after[:-1]] == [(t["name"], t["key"]) for t in before]
    assert (after[-1]["name"], after[-1]["key"]) == ("burr", len(before) + 1)
    session.rollback()
    assert session.scalar(select(DefectType).where(DefectType.name == "burr")) is not None


def test_labelled_items_leave_the_queue_and_every_label_is_audited(
    client: TestClient, auth: dict[str, dict[str, str]], session: Session
) -> None:
    total = count(session, "SELECT count(*) FROM inspection")
    everything = "include_passes=true"  # the whole queue, passes too
    items = client.get(f"/api/review-queue?limit=6&{everything}", headers=auth["operator"]).json()[
        "items"
    ]
    for item in items:
        client.post(
            f"/api/inspections/{item['id']}/labels",
            json={"verdict": "pass"},
            headers=auth["operator"],
        )
    counted = client.get(f"/api/review-queue/count?{everything}", headers=auth["operator"]).json()
    assert counted["count"] == total - 6
    session.rollback()
    audited = session.scalars(select(AuditLog).where(AuditLog.action == "label.add")).all()
    assert len(audited) == 6
    assert {a.actor for a in audited} == {"operator"}
    assert {a.entity_id for a in audited} == {str(i["id"]) for i in items}
