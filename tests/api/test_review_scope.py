"""#19 item 4: the default review queue holds the parts the stations flagged plus the uncertain
band just below each station's threshold, its count is the overview's "flagged, not reviewed",
and passes come only on request."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from inspection.api.server import RunningServer
from inspection.services.review_queue import UNCERTAIN_MARGIN
from tests.api.browser import wait_for
from tests.api.conftest import count

UNLABELLED = "NOT EXISTS (SELECT 1 FROM operator_label l WHERE l.inspection_id = inspection.id)"


def _queue_ids(client: TestClient, headers: dict[str, str], query: str = "") -> list[int]:
    ids: list[int] = []
    cursor = ""
    while True:
        page = client.get(f"/api/review-queue?limit=200{query}{cursor}", headers=headers).json()
        ids += [item["id"] for item in page["items"]]
        if page["next_cursor"] is None:
            return ids
        cursor = f"&cursor={page['next_cursor']}"


def test_default_queue_is_flagged_plus_uncertain_and_matches_the_overview(
    client: TestClient, auth: dict[str, dict[str, str]], session: Session
) -> None:
    operator = auth["operator"]
    floor = 0.5 - UNCERTAIN_MARGIN  # the seeded stations run at the model's calibration
    expected = count(
        session,
        f"SELECT count(*) FROM inspection WHERE {UNLABELLED} "
        "AND (verdict = 'fail' OR norm_score > :floor)",
        floor=floor,
    )
    clear_passes = count(
        session,
        f"SELECT count(*) FROM inspection WHERE {UNLABELLED} "
        "AND verdict = 'pass' AND norm_score <= :floor",
        floor=floor,
    )
    assert expected > 0 and clear_passes > 0  # the seed has both, or this proves nothing

    items = _queue_ids(client, operator)
    assert len(items) == expected
    for item_id in items[:20]:
        detail = client.get(f"/api/inspections/{item_id}", headers=operator).json()
        assert detail["verdict"] == "fail" or detail["norm_score"] > floor
    assert client.get("/api/review-queue/count", headers=operator).json()["count"] == expected

    overview = client.get("/api/overview", headers=operator).json()
    assert sum(s["to_review"] for s in overview) == expected

    everything = _queue_ids(client, operator, "&include_passes=true")
    assert len(everything) == expected + clear_passes
    counted = client.get("/api/review-queue/count?include_passes=true", headers=operator).json()
    assert counted["count"] == expected + clear_passes


@pytest.mark.browser
@pytest.mark.slow
def test_review_page_count_equals_overview_and_passes_on_request(
    tab: Any, shared_server: RunningServer
) -> None:
    """At the four viewports (nothing here writes: the module's one app serves them all)."""
    page = tab("operator")
    page.goto(f"{shared_server.url}/")
    kpi = page.locator(".kpi", has_text="Flagged, not reviewed").locator(".value").inner_text()
    flagged = int(kpi.replace(",", ""))
    page.goto(f"{shared_server.url}/review")
    wait_for(page, "() => /^[0-9,]+$/.test(document.getElementById('queue-count').textContent)")
    in_queue = int(page.locator("#queue-count").inner_text().replace(",", ""))
    assert in_queue == flagged
    page.check("input[name=include_passes]")
    page.locator("input[name=include_passes]").evaluate("el => el.form.requestSubmit()")
    page.wait_for_url(re.compile(r".*include_passes=true.*"))
    wait_for(page, "() => /^[0-9,]+$/.test(document.getElementById('queue-count').textContent)")
    assert int(page.locator("#queue-count").inner_text().replace(",", "")) > in_queue
