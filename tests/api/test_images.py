"""Frames, thumbnails and heatmap overlays; broken or unsafe artifacts are 404, not 500."""

from __future__ import annotations

import cv2
import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from inspection.api.images import ImageBytes, LruBytesCache, overlay_rgba, overlay_scale
from inspection.api.settings import ApiSettings
from inspection.db.engine import make_engine


def _decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None
    return image


def test_frame_thumbnail_and_overlay(client: TestClient, auth: dict[str, dict[str, str]]) -> None:
    headers = auth["operator"]
    frame = client.get("/api/inspections/1/frame", headers=headers)
    assert frame.status_code == 200 and frame.headers["content-type"] == "image/png"
    assert _decode(frame.content).shape[:2] == (256, 256)
    thumb = client.get("/api/inspections/1/frame?max_side=64", headers=headers)
    assert thumb.headers["content-type"] == "image/jpeg"
    assert max(_decode(thumb.content).shape[:2]) == 64
    overlay = client.get("/api/inspections/1/overlay.png", headers=headers)
    assert overlay.status_code == 200
    rgba = _decode(overlay.content)
    assert rgba.shape == (256, 256, 4)
    again = client.get("/api/inspections/1/overlay.png", headers=headers)
    assert again.content == overlay.content


def test_unsafe_or_missing_artifacts_are_404(
    client: TestClient, auth: dict[str, dict[str, str]], settings: ApiSettings, session: Session
) -> None:
    engine = make_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE artifact SET store_key = '../../etc/passwd' WHERE inspection_id = 1 AND kind = 'frame'"
            )
        )
        conn.execute(
            text(
                "UPDATE artifact SET store_key = 'ab/cd/missing.png' WHERE inspection_id = 2 AND kind = 'frame'"
            )
        )
        conn.execute(text("DELETE FROM artifact WHERE inspection_id = 3 AND kind = 'heatmap'"))
    engine.dispose()
    headers = auth["operator"]
    unsafe = client.get("/api/inspections/1/frame", headers=headers)
    assert unsafe.status_code == 404 and "passwd" not in unsafe.text
    missing = client.get("/api/inspections/2/frame", headers=headers)
    assert missing.status_code == 404
    assert "no longer in the artifact store" in missing.json()["detail"]
    no_heatmap = client.get("/api/inspections/3/overlay.png", headers=headers)
    assert no_heatmap.status_code == 404 and "no stored heatmap" in no_heatmap.json()["detail"]
    detail = client.get("/api/inspections/3", headers=headers).json()
    assert detail["overlay_url"] is None


def test_overlay_colour_scale_follows_pixel_threshold() -> None:
    heat = np.zeros((10, 10), np.float32)
    heat[5, 5] = 1.0
    rgba = overlay_rgba(heat, size=(20, 20), pixel_threshold=0.5)
    assert rgba.shape == (20, 20, 4)
    assert rgba[0, 0, 3] == 0
    assert rgba[10:12, 10:12, 3].max() > 150


def test_lru_cache_is_bounded() -> None:
    cache = LruBytesCache(max_bytes=100)
    for i in range(10):
        cache.put((i,), ImageBytes(b"x" * 20, "image/png"))
    assert len(cache) == 5
    assert cache.get((0,)) is None and cache.get((9,)) is not None
    cache.put(("big",), ImageBytes(b"x" * 60, "image/png"))
    assert cache.get(("big",)) is None


def test_contour_overlay_and_its_colour_scale(
    client: TestClient, auth: dict[str, dict[str, str]]
) -> None:
    headers = auth["operator"]
    first = client.get("/api/review-queue?limit=1", headers=headers).json()["items"][0]
    assert first["regions"], "the queue starts with a flagged part"
    url = first["overlay_url"]
    filled = _decode(client.get(url, headers=headers).content)
    contour = client.get(f"{url}?style=contour", headers=headers)
    assert contour.status_code == 200
    lines = _decode(contour.content)
    assert lines.shape == filled.shape == (256, 256, 4)
    # isolines only: far fewer pixels painted than the filled map, and those opaque
    assert 0 < (lines[..., 3] > 0).sum() < (filled[..., 3] > 0).sum()
    assert client.get(f"{url}?style=x", headers=headers).status_code == 422
    scale = client.get(f"/api/inspections/{first['id']}/overlay-scale", headers=headers).json()
    assert scale["pixel_threshold"] == 0.5  # the seeded stations' pixel threshold
    assert (scale["vmin"], scale["vmax"]) == (0.3, 0.75)
    assert scale["levels"] == [0.5, 0.625] and "anomaly score" in scale["units"]


def test_overlay_scale_without_pixel_threshold_follows_the_map() -> None:
    heat = np.zeros((40, 40), np.float32)
    heat[8:32, 8:32] = 2.0
    scale = overlay_scale(heat, pixel_threshold=None)
    assert (scale.vmin, scale.vmax, scale.pixel_threshold) == (0.0, 2.0, None)
    lines = overlay_rgba(heat, size=None, pixel_threshold=None, style="contour")
    assert lines[20, 20, 3] == 0 and lines[8, 20, 3] > 0  # the inside stays clear
