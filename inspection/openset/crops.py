"""Cropping the defect region out of an image, around an anomaly map or a mask.

The typer can classify either the whole image or a square crop around the defect. On the
station the crop is centred on the **detector's anomaly map**; ground-truth masks may centre it
only for training images (never for test images, which is why the ``mt-open`` benchmark types
whole images).
"""

from __future__ import annotations

import cv2
import numpy as np


def defect_box(
    heat: np.ndarray, level: float = 0.5, margin: float = 0.5, min_side: float = 0.25
) -> tuple[int, int, int, int]:
    """Square box (x0, y0, x1, y1) in ``heat``'s pixels around its hot region.

    Args:
        heat: (H, W) anomaly map (float, higher = more anomalous) or bool mask.
        level: pixels >= ``min + level * (max - min)`` of the map form the region.
        margin: the box side is the region's larger side times ``1 + 2 * margin``.
        min_side: the box side is at least this fraction of the image's smaller side.

    The box is clamped to the image; an empty or flat map gives the whole image.
    """
    h, w = heat.shape
    m = np.asarray(heat, dtype=np.float64)
    lo, hi = float(m.min()), float(m.max())
    if hi <= lo:
        return 0, 0, w, h
    ys, xs = np.nonzero(m >= lo + level * (hi - lo))
    cx, cy = (xs.min() + xs.max() + 1) / 2.0, (ys.min() + ys.max() + 1) / 2.0
    extent = max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
    side = round(min(max(float(extent) * (1 + 2 * margin), min_side * min(h, w)), h, w))
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    return x0, y0, x0 + side, y0 + side


def crop_defect(
    image: np.ndarray,
    heat: np.ndarray,
    size: int,
    level: float = 0.5,
    margin: float = 0.5,
    min_side: float = 0.25,
) -> np.ndarray:
    """(size, size, C) uint8 crop of ``image`` (H, W, C) around the hot region of ``heat``.

    ``heat`` may have a different resolution than the image (an anomaly map at model input
    size); the box is scaled to the image. See :func:`defect_box` for the parameters.
    """
    h, w = image.shape[:2]
    hh, hw = heat.shape
    x0, y0, x1, y1 = defect_box(heat, level, margin, min_side)
    sx, sy = w / hw, h / hh
    crop = image[
        int(y0 * sy) : max(int(y1 * sy), int(y0 * sy) + 1),
        int(x0 * sx) : max(int(x1 * sx), int(x0 * sx) + 1),
    ]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
