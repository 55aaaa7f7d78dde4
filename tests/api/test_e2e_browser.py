"""End to end in a real headless Chromium: an operator reviews 100 queued items with the
keyboard alone, and every label lands in the database. The window changes size every 25 labels,
through the four viewports of #19, with the key legend on screen at each; the detail page's
keys and history are checked at each viewport on one app for the module.

Runs uvicorn in a thread on a free localhost port against a migrated SQLite copy seeded with
synthetic inspections (frames from :mod:`inspection.data.synthetic`, heatmaps from their masks;
no model). Screenshots of the main pages go to ``test-artifacts/`` (gitignored). Skips when
Debian's ``chromium`` or the Playwright package is missing (never downloads a browser).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from inspection.api.server import RunningServer
from inspection.db.models import AuditLog, DefectType, Inspection, OperatorLabel, User, Verdict
from tests.api.browser import current_id, login, shot, wait_for, wait_selected
from tests.api.conftest import VIEWPORTS
from tests.api.test_ui_operator import VISIBLE_JS

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_operator_reviews_100_items_with_the_keyboard(
    page: Any, server: RunningServer, session: Session
) -> None:
    base = server.url
    page.goto(f"{base}/login")
    shot(page, "login")
    login(page, base, "operator")
    shot(page, "overview")
    page.goto(f"{base}/review?include_passes=true")  # 100 labels: more than the flagged ones
    page.wait_for_selector("#queue-list li.selected")
    wait_for(page, "() => document.getElementById('queue-count').textContent !== '…'")
    wait_for(page, "() => document.getElementById('frame-img').complete")
    shot(page, "review", full_page=False)

    # keys are per station: {(station id, key): type name}
    types = {
        (int(station), str(key)): t["name"]
        for t in page.evaluate(
            "JSON.parse(document.getElementById('page-data').textContent).defect_types"
        )
        for station, key in t["keys"].items()
    }
    keys = itertools.cycle(["o", "1", "o", "2", "o", "3", "4", "o", "5", "o"])
    expected: dict[int, tuple[Verdict, str | None]] = {}
    skipped: set[int] = set()
    labels_done = 0
    skip_at = {7, 42}
    while labels_done < 100:
        if labels_done % 25 == 0 and not page.evaluate(
            "() => document.querySelector('.modal-back:not([hidden])')"
        ):
            width, height = VIEWPORTS[labels_done // 25]
            page.set_viewport_size({"width": width, "height": height})
            wait_for(page, "w => innerWidth === w", width)
            assert page.evaluate(VISIBLE_JS, ["key-legend"]), f"legend cut at {width}x{height}"
        item = current_id(page)
        if labels_done in skip_at:  # skip one now and then
            skip_at.remove(labels_done)
            page.keyboard.press("s")
            skipped.add(item)
            wait_selected(page, item)
            continue
        if labels_done == 15:  # look back and forth, then continue where we were
            page.keyboard.press("k")
            wait_selected(page, item)
            page.keyboard.press("j")
            wait_for(
                page,
                "id => document.getElementById('review').dataset.currentId === String(id)",
                item,
            )
        if labels_done in (20, 60):  # a new defect type, named in the dialog
            page.keyboard.press("n")
            page.wait_for_selector("#newtype-name:focus")
            if labels_done == 20:
                shot(page, "review-new-type", full_page=False)
            page.keyboard.type("Burr")
            page.keyboard.press("Enter")
            expected[item] = (Verdict.FAIL, "burr")
        else:
            key = next(keys)
            page.keyboard.press(key)
            expected[item] = (
                (Verdict.PASS, None)
                if key == "o"
                else (Verdict.FAIL, types[(session.get(Inspection, item).station_id, key)])  # type: ignore[union-attr]
            )
        labels_done += 1
        following = wait_selected(page, item)
        if labels_done == 30:  # undo the last label: back to that item, label it again
            page.keyboard.press("u")
            wait_for(
                page,
                "id => document.getElementById('review').dataset.currentId === String(id)",
                item,
            )
            page.keyboard.press("o")
            expected[item] = (Verdict.PASS, None)
            assert wait_selected(page, item) == following
    wait_for(page, "() => document.getElementById('review').dataset.pending === '0'", timeout_s=60)
    assert page.text_content("#reviewed-count") == "100"
    assert page.text_content("#sync-state") == "All saved"
    shot(page, "review-after-100", full_page=False)

    session.rollback()
    operator = session.scalar(select(User).where(User.username == "operator"))
    assert operator is not None
    rows = session.scalars(
        select(OperatorLabel).where(OperatorLabel.user_id == operator.id).order_by(OperatorLabel.id)
    ).all()
    latest = {row.inspection_id: row for row in rows}
    assert len(latest) == 100 == len(expected)
    type_names = {t.id: t.name for t in session.scalars(select(DefectType))}
    for inspection_id, (verdict, defect_type) in expected.items():
        row = latest[inspection_id]
        assert row.verdict == verdict, inspection_id
        assert (type_names[row.defect_type_id] if row.defect_type_id else None) == defect_type
    assert not skipped & latest.keys()
    assert len(rows) == 100, "the undone label was deleted, not kept"
    undo_count = session.scalar(
        select(func.count()).select_from(AuditLog).where(AuditLog.action == "label.undo")
    )
    add_count = session.scalar(
        select(func.count()).select_from(AuditLog).where(AuditLog.action == "label.add")
    )
    assert (undo_count, add_count) == (1, 101)

    # The queue page now starts with what is left, and the count matches the database.
    page.reload()
    wait_for(page, "() => document.getElementById('queue-count').textContent !== '…'")
    left = int(page.text_content("#queue-count").replace(",", ""))  # type: ignore[union-attr]
    unlabelled = session.scalar(
        select(func.count()).select_from(Inspection).where(~Inspection.labels.any())
    )
    assert left == unlabelled > 0


def test_detail_page_labels_with_keys_and_shows_history(
    tab: Any, shared_server: RunningServer, shared_session: Session, viewport: dict[str, int]
) -> None:
    base = shared_server.url
    session = shared_session
    page = tab("operator")
    page.goto(f"{base}/stations")  # a light page of the app: fetch needs its origin
    item = page.evaluate(
        "fetch('/api/review-queue?limit=1').then(r => r.json()).then(p => p.items[0].id)"
    )
    page.goto(f"{base}/inspections/{item}")
    wait_for(page, "() => document.getElementById('frame-img').complete")
    page.keyboard.press("2")
    page.wait_for_selector("#history li:has-text('labelled')")
    page.keyboard.press("u")
    page.wait_for_selector("#history li.is-undo")
    page.keyboard.press("o")
    wait_for(page, "() => document.querySelectorAll('#history li').length === 3")
    page.keyboard.press("h")  # heatmap off and on again
    assert "no-overlay" in (page.get_attribute("#viewer", "class") or "")
    page.keyboard.press("h")
    page.keyboard.press("?")
    page.wait_for_selector("#help-modal:not([hidden])")
    page.keyboard.press("Escape")
    assert page.evaluate(VISIBLE_JS, ["key-legend"])
    if viewport == {"width": 1366, "height": 900}:
        shot(page, "detail")
    session.rollback()
    labels = session.scalars(select(OperatorLabel).where(OperatorLabel.inspection_id == item)).all()
    assert [label.verdict for label in labels] == [Verdict.PASS]


def test_screenshots_of_engineer_and_admin_pages(page: Any, server: RunningServer) -> None:
    base = server.url
    login(page, base, "admin")
    page.goto(f"{base}/charts")
    shot(page, "charts")
    page.goto(f"{base}/models")
    boxes = page.locator("input.compare-pick")
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.click("#compare-btn")
    page.wait_for_selector("#compare")
    shot(page, "models")
    page.goto(f"{base}/stations/1")
    page.fill("#image-threshold", "0.42")
    wait_for(page, "() => document.getElementById('pv-flips').textContent !== '0'")
    shot(page, "station-thresholds")
    page.goto(f"{base}/admin/users")
    shot(page, "users")
    page.goto(f"{base}/audit")
    shot(page, "audit")
    page.goto(f"{base}/docs")
    shot(page, "api-docs", full_page=False)
