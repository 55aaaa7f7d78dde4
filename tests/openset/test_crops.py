"""Crop around the hot region of an anomaly map or mask."""

from __future__ import annotations

import numpy as np

from inspection.openset.crops import crop_defect, defect_box


def test_box_is_square_contains_region_and_clamps() -> None:
    heat = np.zeros((100, 200))
    heat[10:20, 180:190] = 1.0
    x0, y0, x1, y1 = defect_box(heat, margin=0.5, min_side=0.1)
    assert x1 - x0 == y1 - y0 == 20
    assert x0 <= 180 and x1 >= 190 and y0 <= 10 and y1 >= 20
    assert x1 <= 200 and y0 >= 0


def test_flat_map_gives_whole_image_and_crop_scales_to_image() -> None:
    assert defect_box(np.zeros((8, 8))) == (0, 0, 8, 8)
    image = np.zeros((200, 200, 3), np.uint8)
    image[100:120, 100:120] = 255
    heat = np.zeros((50, 50), bool)  # a map at a quarter of the image resolution
    heat[25:30, 25:30] = True
    crop = crop_defect(image, heat, 32, margin=0.0, min_side=0.0)
    assert crop.shape == (32, 32, 3)
    assert crop.mean() > 200  # the bright square fills the crop
