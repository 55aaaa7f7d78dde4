"""Pagination: the review queue's keyset cursor, the inspections list's offset, the audit log."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.api.conftest import count


def _queue_pages(
    client: TestClient, headers: dict[str, str], query: str, limit: int
) -> list[list[dict[str, object]]]:
    pages = []
    cursor = None
    while True:
        url = f"/api/review-queue?limit={limit}{query}" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers=headers).json()
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages


def test_queue_cursor_walks_every_item_once_in_priority_order(
    client: TestClient, auth: dict[str, dict[str, str]], session: Session
) -> None:
    total = count(session, "SELECT count(*) FROM inspection")
    pages = _queue_pages(client, auth["operator"], "&include_passes=true", limit=7)
    items = [item for page in pages for item in page]
    assert len(items) == total
    assert len({item["id"] for item in items}) == total
    assert all(len(page) == 7 for page in pages[:-1])
    keys = [(item["has_unknown"], item["norm_score"], item["id"]) for item in items]
    assert keys == sorted(keys, reverse=True)
    assert items[0]["has_unknown"], "unknown defect types come first"
    counted = client.get(
        "/api/review-queue/count?include_passes=true", headers=auth["operator"]
    ).json()
    assert counted == {"count": total, "capped": False}


def test_queue_cursor_is_stable_while_items_are_labelled(
    client: TestClient, auth: dict[str, dict[str, str]], session: Session
) -> None:
    total = count(session, "SELECT count(*) FROM inspection")
    first = client.get(
        "/api/review-queue?limit=10&include_passes=true", headers=auth["operator"]
    ).json()
    for item in first["items"][:5]:
        response = client.post(
            f"/api/inspections/{item['id']}/labels",
            json={"verdict": "pass"},
            headers=auth["operator"],
        )
        assert response.status_code == 201
    rest = []
    cursor = first["next_cursor"]
    while cursor:
        page = client.get(
            f"/api/review-queue?limit=10&include_passes=true&cursor={cursor}",
            headers=auth["operator"],
        ).json()
        rest.extend(page["items"])
        cursor = page["next_cursor"]
    seen = {i["id"] for i in first["items"]} | {i["id"] for i in rest}
    assert len(seen) == total
    fresh = client.get(
        "/api/review-queue?limit=200&include_passes=true", headers=auth["operator"]
    ).json()["items"]
    assert len(fresh) == total - 5
    everything = client.get(
        "/api/review-queue?limit=200&include_labelled=true&include_passes=true",
        headers=auth["operator"],
    ).json()["items"]
    assert len(everything) == total
    labelled = [i for i in everything if i["label"] is not None]
    assert len(labelled) == 5
    assert all(i["label"]["user"] == "operator" for i in labelled)


def test_queue_filters(
    client: TestClient, auth: dict[str, dict[str, str]], session: Session
) -> None:
    headers = auth["operator"]
    by_station = client.get("/api/review-queue?station_id=2&limit=200", headers=headers).json()
    assert by_station["items"] and {i["station_id"] for i in by_station["items"]} == {2}
    high = client.get("/api/review-queue?min_score=0.8&limit=200", headers=headers).json()
    assert all(i["norm_score"] >= 0.8 for i in high["items"])
    assert len(high["items"]) == count(
        session, "SELECT count(*) FROM inspection WHERE norm_score >= 0.8"
    )
    cracks = client.get("/api/review-queue?defect_type=crack&limit=200", headers=headers).json()
    assert cracks["items"]
    assert all(any(r["defect_type"] == "crack" for r in i["regions"]) for i in cracks["items"])
    none = client.get("/api/review-queue?defect_type=never-seen", headers=headers).json()
    assert none == {"items": [], "next_cursor": None}
    future = client.get("/api/review-queue?since=2999-01-01T00:00:00", headers=headers).json()
    assert future["items"] == []
    past = client.get(
        "/api/review-queue?until=2000-01-01T00:00:00Z&limit=5", headers=headers
    ).json()
    assert past["items"] == []


def test_inspection_list_offset_pagination(
    client: TestClient, auth: dict[str, dict[str, str]], session: Session
) -> None:
    total = count(session, "SELECT count(*) FROM inspection")
    seen: list[int] = []
    offset: int | None = 0
    while offset is not None:
        page = client.get(
            f"/api/inspections?limit=11&offset={offset}", headers=auth["operator"]
        ).json()
        assert page["total"] == total
        seen.extend(i["id"] for i in page["items"])
        offset = page["next_offset"]
    assert len(seen) == len(set(seen)) == total
    fails = client.get("/api/inspections?verdict=fail&limit=200", headers=auth["operator"]).json()
    assert fails["total"] == count(
        session, "SELECT count(*) FROM inspection WHERE verdict = 'fail'"
    )
    assert {i["verdict"] for i in fails["items"]} == {"fail"}
    beyond = client.get("/api/inspections?offset=100000", headers=auth["operator"]).json()
    assert beyond["items"] == [] and beyond["next_offset"] is None


def test_audit_log_pages_with_before_id(
    client: TestClient, auth: dict[str, dict[str, str]], session: Session
) -> None:
    total = count(session, "SELECT count(*) FROM audit_log")
    assert total > 10
    ids: list[int] = []
    url = "/api/audit?limit=4"
    while True:
        page = client.get(url, headers=auth["engineer"]).json()
        ids.extend(r["id"] for r in page["items"])
        if page["next_before_id"] is None:
            break
        url = f"/api/audit?limit=4&before_id={page['next_before_id']}"
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == count(session, "SELECT count(*) FROM audit_log")
