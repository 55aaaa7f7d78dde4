"""Defect regions of an anomalous frame: connected components of its anomaly map."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Box:
    """A connected anomalous region in model pixels: box, pixel count and peak map value."""

    x: int
    y: int
    w: int
    h: int
    area: int
    peak: float


def find_regions(
    amap: np.ndarray, threshold: float, max_regions: int = 8, min_area: int = 4
) -> list[Box]:
    """Connected components of ``amap > threshold`` (8-connected), largest peak first.

    When nothing exceeds ``threshold`` (an image flagged by its score alone), the region around
    the map's maximum (pixels >= 80 % of it) is returned instead, so an anomalous frame always
    has something to show and type.
    """
    mask = (amap > threshold).astype(np.uint8)
    if not mask.any():
        peak = float(amap.max())
        mask = (amap >= peak * 0.8 if peak > 0 else amap >= peak).astype(np.uint8)
        min_area = 1
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    boxes = []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area < min_area:
            continue
        peak = float(amap[y : y + h, x : x + w][labels[y : y + h, x : x + w] == i].max())
        boxes.append(Box(x, y, w, h, area, peak))
    boxes.sort(key=lambda b: -b.peak)
    return boxes[:max_regions]
