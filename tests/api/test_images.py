"""Frames, thumbnails and heatmap overlays; broken or unsafe artifacts are 404, not 500."""

from __future__ import annotations

import cv2
import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from inspection.api.images import ImageBytes, LruBytesCache, overlay_rgba
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
