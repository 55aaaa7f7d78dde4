"""Input geometry: letterbox / stretch, the fit choice, loaders, station parity, metrics, bundles."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from inspection.geometry import (
    choose_fit,
    crop_box,
    image_shapes,
    letterbox,
    letterbox_box,
    letterbox_mask,
    roi_shape,
    scale_box,
    unletterbox,
)

# (h, w) -> pad box at 64 px: long side 64, centred
SHAPES = {
    "portrait": ((120, 40), (21, 0, 21, 64)),
    "landscape": ((30, 90), (0, 21, 64, 21)),
    "square": ((50, 50), (0, 0, 64, 64)),
}


def _gradient(h: int, w: int) -> np.ndarray:
    """A smooth (h, w, 3) uint8 RGB image (survives resizing round trips)."""
    yy, xx = np.mgrid[0:h, 0:w]
    r = 255 * xx / max(w - 1, 1)
    g = 255 * yy / max(h - 1, 1)
    b = 128 + 60 * np.sin(xx / 9.0) * np.cos(yy / 7.0)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_letterbox_boxes_and_round_trip(name: str) -> None:
    (h, w), want = SHAPES[name]
    image = _gradient(h, w)
    square, box = letterbox(image, 64, "pad")
    assert square.shape == (64, 64, 3) and square.dtype == np.uint8
    assert box == want == letterbox_box((h, w), 64, "pad")
    x, y, bw, bh = box
    # aspect ratio kept (to a pixel of rounding); the image fills the box exactly
    assert abs(bw / bh - w / h) <= max(w / h, h / w) / min(bw, bh) + 1e-9
    np.testing.assert_array_equal(
        crop_box(square, box), cv2.resize(image, (bw, bh), interpolation=cv2.INTER_AREA)
    )
    # padding replicates the image's border rows / columns
    if y > 0:
        np.testing.assert_array_equal(square[0], square[y])
        np.testing.assert_array_equal(square[-1], square[y + bh - 1])
    if x > 0:
        np.testing.assert_array_equal(square[:, 0], square[:, x])
        np.testing.assert_array_equal(square[:, -1], square[:, x + bw - 1])
    back = unletterbox(square.astype(np.float32), box, (h, w))
    assert back.shape == (h, w, 3)
    assert np.abs(back - image.astype(np.float32)).mean() < 6.0  # down to 64 px and back

    mask = np.zeros((h, w), bool)
    mask[h // 4 : h // 2, w // 4 : w // 2] = True
    mbox_square, mbox = letterbox_mask(mask, 64, "pad")
    assert mbox == box and mbox_square.dtype == bool
    outside = np.ones((64, 64), bool)
    outside[y : y + bh, x : x + bw] = False
    assert not mbox_square[outside].any()  # the padding is never defect
    mback = unletterbox(mbox_square.astype(np.uint8), mbox, (h, w), cv2.INTER_NEAREST) > 0
    assert (mback == mask).mean() > 0.97


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_stretch_is_todays_resize(name: str) -> None:
    (h, w), _ = SHAPES[name]
    image = _gradient(h, w)
    square, box = letterbox(image, 64, "stretch")
    assert box == (0, 0, 64, 64)
    np.testing.assert_array_equal(square, cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA))
    at_size = _gradient(64, 64)
    assert letterbox(at_size, 64, "stretch")[0] is at_size  # no copy on the hot path
    assert letterbox(at_size, 64, "pad")[0] is at_size
    back = unletterbox(np.ones((64, 64), np.float32), box, (h, w))
    assert back.shape == (h, w)


def test_letterbox_rejects_unknown_fit() -> None:
    with pytest.raises(ValueError, match="fit"):
        letterbox(_gradient(10, 10), 8, "crop")


def test_box_helpers() -> None:
    assert scale_box((0, 11, 64, 21), 64, 32) == (0, 6, 32, 10)  # edges rounded: 5.5 -> 6, 16
    assert scale_box((3, 4, 5, 6), 64, 64) == (3, 4, 5, 6)
    assert roi_shape((48, 144), None) == (48, 144)
    assert roi_shape((48, 144), (100, 10, 80, 20)) == (20, 44)  # clipped at the frame


@pytest.mark.parametrize(
    ("shapes", "fit"),
    [
        ([(256, 256)] * 3, "stretch"),  # squares stay exactly as today
        ([(100, 108), (100, 97)], "stretch"),  # nearly square, little spread
        ([], "stretch"),
        ([(100, 400)] * 3, "pad"),  # long, narrow (commutators)
        ([(400, 100)], "pad"),  # portrait
        ([(480, 640)], "pad"),  # 4:3 camera frames
        ([(100, 88), (100, 112)], "pad"),  # each within tolerance, but they vary
        ([(256, 256), (256, 256), (100, 300)], "pad"),  # one odd image is enough
    ],
)
def test_choose_fit(shapes: list[tuple[int, int]], fit: str) -> None:
    assert choose_fit(shapes) == fit


def test_image_shapes_reads_headers_and_skips_broken(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), _gradient(30, 70))
    cv2.imwrite(str(tmp_path / "b.jpg"), _gradient(80, 20))
    (tmp_path / "c.png").write_bytes(b"not an image")
    paths = sorted(tmp_path.iterdir())
    assert image_shapes(paths) == [(30, 70), (80, 20)]
