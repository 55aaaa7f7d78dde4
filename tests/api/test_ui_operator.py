"""What an operator sees, checked in headless Chromium (issue #19, items 2, 3, 6 and 7):
overlay and outlines on the frame, labels on labelled queue rows, a heatmap view that leaves the
defect visible with a colour scale, a side panel that fits, toasts that cover nothing needed,
error pages with the navigation, and confirmations that name what a change does (in the browser
and, without JavaScript, on the server).

Every test runs at the four viewports of the issue (``viewport`` in ``tests/api/conftest.py``)
on one app and one browser for the module (``shared_server``, ``tab``): the tests share the
module's database, so each holds on whatever the previous ones labelled or promoted.
Debian chromium; skips without it.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from inspection.api.server import RunningServer
from inspection.db.models import ModelStatus, ModelVersion, Station
from tests.api.browser import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: Boxes (x, y, width, height) of the frame's drawn picture (object-fit: contain inside its
#: element), the overlay and the outline layer, in CSS pixels.
BOXES_JS = """() => {
  const box = (node) => { const r = node.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; };
  const frame = document.getElementById('frame-img');
  const [x, y, w, h] = box(frame);
  const nat = frame.naturalWidth / frame.naturalHeight;
  let cw = w, ch = h;
  if (w / h > nat) cw = h * nat; else ch = w / nat;
  const picture = [x + (w - cw) / 2, y + (h - ch) / 2, cw, ch];
  const plain = document.getElementById('plain-img');
  return {
    picture,
    overlay: box(document.getElementById('overlay-img')),
    outlines: box(document.getElementById('outlines')),
    plain: plain && !document.getElementById('viewer-plain').hidden ? box(plain) : null,
  };
}"""


def frame_loaded(page: Any) -> None:
    wait_for(
        page,
        "() => { const f = document.getElementById('frame-img'); "
        "return f.complete && f.naturalWidth > 0; }",
    )


def assert_same_box(a: list[float], b: list[float], what: str) -> None:
    assert all(abs(p - q) <= 1.0 for p, q in zip(a, b, strict=True)), f"{what}: {a} != {b}"


def first_in_queue(page: Any) -> int:
    return int(
        page.evaluate(
            "fetch('/api/review-queue?limit=1').then(r => r.json()).then(p => p.items[0].id)"
        )
    )


def test_overlay_and_outlines_share_the_frame_box(tab: Any, shared_server: RunningServer) -> None:
    base = shared_server.url
    page = tab("operator")
    page.goto(f"{base}/review")
    frame_loaded(page)
    item = first_in_queue(page)
    for url in (f"{base}/review", f"{base}/inspections/{item}"):
        if url != page.url:
            page.goto(url)
            frame_loaded(page)
        for mode in (None, "contour", "heat", "side"):  # None: as the page opens
            if mode is not None:
                page.select_option("#overlay-mode", mode)
            boxes = page.evaluate(BOXES_JS)
            where = f"{url} {mode}"
            assert boxes["picture"][2] > 100, f"{where}: frame drawn too small"
            assert_same_box(boxes["overlay"], boxes["picture"], f"overlay {where}")
            assert_same_box(boxes["outlines"], boxes["picture"], f"outlines {where}")
            if mode == "side":
                assert boxes["plain"] is not None, where
                assert abs(boxes["plain"][2] - boxes["picture"][2]) <= 1.0, where


def test_labelled_rows_show_their_label(tab: Any, shared_server: RunningServer) -> None:
    base = shared_server.url
    page = tab("operator")
    page.goto(f"{base}/review")
    frame_loaded(page)
    first = page.get_attribute("#review", "data-current-id")
    page.keyboard.press("o")
    wait_for(page, "() => document.getElementById('review').dataset.pending === '0'")
    page.goto(f"{base}/review?include_labelled=true")
    row = f"#q-{first}"
    page.wait_for_selector(f"{row}.labelled")
    shown = page.evaluate(
        "sel => getComputedStyle(document.querySelector(sel + ' .meta'), '::after').content",
        row,
    )
    assert shown == '"✓ OK"'


def _picture_pixels(page: Any, clip: dict[str, float]) -> np.ndarray:
    png = page.screenshot(clip=clip)
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    return np.asarray(image, np.int16)


def test_default_heatmap_view_leaves_the_defect_visible_with_a_colour_scale(
    tab: Any, shared_server: RunningServer
) -> None:
    page = tab("operator")  # a fresh context: the view settings as a new operator has them
    base = shared_server.url
    page.goto(f"{base}/stations")  # a light page of the app: fetch needs its origin
    item = page.evaluate(
        "fetch('/api/review-queue?limit=50').then(r => r.json())"
        ".then(p => p.items.find(i => i.regions.length && i.overlay_url))"
    )
    assert item is not None
    page.goto(f"{base}/inspections/{item['id']}")
    frame_loaded(page)
    wait_for(page, "() => document.getElementById('overlay-img').complete")
    assert page.input_value("#overlay-mode") == "contour"

    # the colour scale: numbers in the heatmap's units, the pixel threshold marked
    page.wait_for_selector("#colour-scale:not([hidden])")
    scale = page.evaluate(
        f"fetch('/api/inspections/{item['id']}/overlay-scale').then(r => r.json())"
    )
    assert scale["vmin"] < scale["vmax"] and "anomaly score" in scale["units"]
    assert page.text_content("#cs-min") and page.text_content("#cs-max")
    assert "pixel threshold" in (page.text_content("#cs-note") or "")
    assert "anomaly score" in (page.text_content("#colour-scale") or "").lower()

    # the defect's pixels: the default view against the bare frame (overlay off)
    region = item["regions"][0]
    x, y, w, h = page.evaluate(BOXES_JS)["picture"]
    sx, sy = w / item["width"], h / item["height"]
    clip = {
        "x": x + (region["x"] + 0.2 * region["w"]) * sx,
        "y": y + (region["y"] + 0.2 * region["h"]) * sy,
        "width": max(4.0, 0.6 * region["w"] * sx),
        "height": max(4.0, 0.6 * region["h"] * sy),
    }
    page.keyboard.press("b")  # outlines off: compare the picture only
    shown = _picture_pixels(page, clip)
    page.keyboard.press("h")
    bare = _picture_pixels(page, clip)
    page.keyboard.press("h")
    page.select_option("#overlay-mode", "heat")
    page.fill("#overlay-opacity", "70")  # the old default
    page.dispatch_event("#overlay-opacity", "input")
    wait_for(page, "() => document.getElementById('overlay-img').complete")
    covered = _picture_pixels(page, clip)

    def changed(a: np.ndarray) -> float:
        return float((np.abs(a - bare).max(axis=2) > 40).mean())

    assert changed(covered) > 0.5, "the filled heatmap should cover the defect (sanity)"
    assert changed(shown) < 0.25, f"default view hides {changed(shown):.0%} of the defect"

    # side by side: the bare frame next to the heatmap, both the same size
    page.keyboard.press("v")  # heat -> side
    assert page.input_value("#overlay-mode") == "side"
    boxes = page.evaluate(BOXES_JS)
    assert boxes["plain"] is not None and boxes["plain"][2] == pytest.approx(
        boxes["picture"][2], abs=1
    )


VISIBLE_JS = """(ids) => ids.every((id) => {
  const node = document.getElementById(id);
  const r = node.getBoundingClientRect();
  if (r.height === 0 || r.top < 0 || r.bottom > innerHeight || r.right > innerWidth) return false;
  // every row is really on screen: not clipped by a scrolling parent, not covered
  return Array.from(node.children).every((child) => {
    const c = child.getBoundingClientRect();
    if (c.height === 0) return true;
    const hit = document.elementFromPoint(c.x + Math.min(c.width / 2, 8), c.y + c.height / 2);
    return hit !== null && node.contains(hit);
  });
})"""


#: What must be fully on screen in the review page's side panel at every viewport (the issue: the
#: history fell below the fold at 1366x900, the key legend was cut at 720 px of height).
NEEDED = ["key-legend", "history"]


def test_side_panel_fits_and_toasts_leave_the_legend_free(
    tab: Any, shared_server: RunningServer
) -> None:
    page = tab("operator")
    needed = NEEDED
    page.goto(f"{shared_server.url}/review")
    frame_loaded(page)
    assert page.evaluate(VISIBLE_JS, needed), f"{needed} not fully visible"
    page.keyboard.press("u")  # nothing to undo: a toast
    page.wait_for_selector(".toast")
    toast = page.locator(".toast").first.bounding_box()
    for node in ("#key-legend", "#history", "#viewer"):
        box = page.locator(node).bounding_box()
        overlap = not (
            toast["x"] + toast["width"] <= box["x"]
            or box["x"] + box["width"] <= toast["x"]
            or toast["y"] + toast["height"] <= box["y"]
            or box["y"] + box["height"] <= toast["y"]
        )
        assert not overlap, f"the toast covers {node}"
    assert page.evaluate(VISIBLE_JS, needed)


def test_error_pages_keep_the_navigation(tab: Any, shared_server: RunningServer) -> None:
    """Regression guard (passes on main since the first #19 pass): a 404 page in the app's
    frame, its navigation on screen."""
    page = tab("operator")
    tab.allow("status of 404")
    response = page.goto(f"{shared_server.url}/inspections/999999")
    assert response is not None and response.status == 404
    nav = page.locator("nav[aria-label=Main]")
    assert nav.is_visible()
    assert page.evaluate(
        "() => [...document.querySelectorAll('nav[aria-label=Main] a')].every(a => {"
        " const r = a.getBoundingClientRect();"
        " return r.width > 0 && r.right <= innerWidth && r.bottom <= innerHeight; })"
    ), "a navigation link is off screen"
    page.get_by_role("link", name="Stations").click()
    page.wait_for_url(f"{shared_server.url}/stations")


def _active(session: Session, station_id: int) -> str:
    session.rollback()
    version = session.scalar(
        select(ModelVersion).where(
            ModelVersion.station_id == station_id, ModelVersion.status == ModelStatus.ACTIVE
        )
    )
    assert version is not None
    return version.name


def test_model_and_threshold_changes_ask_first_naming_the_change(
    tab: Any, shared_server: RunningServer, shared_session: Session
) -> None:
    base = shared_server.url
    session = shared_session
    page = tab("engineer")
    messages: list[str] = []
    answer = {"accept": False}

    def on_dialog(dialog: Any) -> None:
        messages.append(dialog.message)
        if answer["accept"]:
            dialog.accept()
        else:
            dialog.dismiss()

    page.on("dialog", on_dialog)

    page.goto(f"{base}/models")
    promote = page.locator("form[action$='/promote'] >> nth=0")
    target = promote.get_attribute("action")
    assert target is not None
    version_id = int(target.split("/")[2])
    session.rollback()
    version = session.get(ModelVersion, version_id)
    assert version is not None and version.station_id is not None
    station_name = session.get(Station, version.station_id).name  # type: ignore[union-attr]
    replaced = _active(session, version.station_id)  # the tests before may have promoted
    promote.locator("button").click()
    assert messages and version.name in messages[-1] and station_name in messages[-1]
    assert f"replacing {replaced}" in messages[-1]
    page.wait_for_timeout(300)
    assert page.url == f"{base}/models"
    assert _active(session, version.station_id) == replaced, "dismissed, yet promoted"

    answer["accept"] = True
    page.locator(f"form[action='{target}'] button").click()
    page.wait_for_selector(".flash")
    assert _active(session, version.station_id) == version.name

    # roll back: names the version that goes and the one that comes back
    answer["accept"] = False
    page.locator(f"form[action='/stations/{version.station_id}/rollback'] button").click()
    assert version.name in messages[-1] and "becomes active" in messages[-1]
    page.wait_for_timeout(300)
    assert _active(session, version.station_id) == version.name

    # thresholds: old and new value and the preview's flips; dismissed -> not saved
    station = session.get(Station, version.station_id)
    assert station is not None
    page.goto(f"{base}/stations/{station.id}")
    page.fill("#image-threshold", "0.42")
    wait_for(page, "() => document.getElementById('pv-flips').textContent !== '0'")
    page.click("#save-thresholds")
    assert "0.500 → 0.420" in messages[-1] and "would change verdict" in messages[-1]
    page.wait_for_timeout(300)
    session.rollback()
    saved = session.get(Station, station.id)
    assert saved is not None and saved.image_threshold == pytest.approx(0.5)

    # without JavaScript the server asks: one click changes nothing, Confirm does
    plain = tab("engineer", java_script_enabled=False)
    plain.goto(f"{base}/models")
    form = plain.locator("form[action$='/promote'] >> nth=0")
    target = form.get_attribute("action")
    assert target is not None
    other = session.get(ModelVersion, int(target.split("/")[2]))
    assert other is not None and other.station_id is not None
    replaced = _active(session, other.station_id)
    form.locator("button").click()
    message = plain.locator("#confirm-message").inner_text()
    assert f"Promote {other.name}" in message and f"replacing {replaced}" in message
    assert _active(session, other.station_id) == replaced, "one click without JS promoted"
    assert plain.locator("#confirm-yes").evaluate(
        "b => { const r = b.getBoundingClientRect(); return r.bottom <= innerHeight && r.right <= innerWidth; }"
    ), "the confirm button is off screen"
    plain.click("#confirm-yes")
    plain.wait_for_selector(".flash")
    assert _active(session, other.station_id) == other.name


def test_threshold_slider_and_number_field_share_one_range(
    tab: Any, shared_server: RunningServer
) -> None:
    page = tab("engineer")
    page.goto(f"{shared_server.url}/stations/1")
    ranges = page.evaluate(
        "() => ['image-threshold', 'threshold-slider'].map(id => "
        "[document.getElementById(id).min, document.getElementById(id).max])"
    )
    assert [float(v) for v in ranges[0]] == [float(v) for v in ranges[1]] == [0.0, 1.0]
    page.fill("#image-threshold", "100")
    assert (
        page.evaluate("() => document.getElementById('image-threshold').checkValidity()") is False
    )
    assert page.is_disabled("#save-thresholds")
    page.fill("#image-threshold", "0.7")
    assert page.input_value("#threshold-slider") == "0.7"
    assert not page.is_disabled("#save-thresholds")
