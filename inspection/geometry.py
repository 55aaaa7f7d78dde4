"""Input geometry: how an image of any shape becomes the model's square input, and back.

NumPy + OpenCV (+ Pillow for :func:`image_shapes`) only, so the station imports it.

Two fits (the bundle records which one its model was trained with, ``model.json``
``input.fit``):

* ``stretch``: resize to ``size`` x ``size`` whatever the aspect ratio (what every model did
  before; square images are unchanged by it). The valid box is the whole square.
* ``pad``: resize preserving the aspect ratio so the long side is ``size``, centre the result
  and fill the rest (a *letterbox*). Images are padded by replicating their border pixels
  (``cv2.BORDER_REPLICATE``: no artificial edge for the network to see at the box's sides,
  the same rule for every image); masks are padded with False. The valid box is where the
  image lies in the square.

A box is ``(x, y, w, h)`` in model pixels: columns ``x .. x + w`` and rows ``y .. y + h`` of
the square hold the image. :func:`unletterbox` maps a model-size map back onto the frame.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal, cast, get_args

import cv2
import numpy as np

logger = logging.getLogger(__name__)

Fit = Literal["stretch", "pad"]
#: Valid region ``(x, y, w, h)`` of a model input, in model pixels.
Box = tuple[int, int, int, int]

FITS: tuple[str, ...] = get_args(Fit)

#: :func:`choose_fit` keeps ``stretch`` while every image's w/h lies in
#: ``[1 / ASPECT_TOLERANCE, ASPECT_TOLERANCE]`` (about [0.87, 1.15]) and the widest ratio is at
#: most ``ASPECT_TOLERANCE`` times the narrowest: squashing by up to 15 % keeps shapes
#: recognisable; more (a 4:3 camera frame, a long commutator) distorts them.
ASPECT_TOLERANCE = 1.15


def check_fit(fit: str) -> Fit:
    """``fit`` as a :data:`Fit`; raises ValueError for anything else."""
    if fit not in FITS:
        raise ValueError(f"fit {fit!r}: use one of {', '.join(FITS)}")
    return cast(Fit, fit)


def check_fit_choice(fit: str) -> Fit | Literal["auto"]:
    """``fit`` as a command-line fit choice: ``auto`` or a :data:`Fit`; raises ValueError for
    anything else."""
    if fit == "auto":
        return "auto"
    if fit not in FITS:
        raise ValueError(f"fit {fit!r}: use auto, {', '.join(FITS)}")
    return cast(Fit, fit)


def full_box(size: int) -> Box:
    """The box of an input that fills the whole ``size`` x ``size`` square."""
    return (0, 0, size, size)


def letterbox_box(hw: tuple[int, int], size: int, fit: str) -> Box:
    """Where an (h, w) image lands in the ``size`` square under ``fit`` (no pixels touched)."""
    if check_fit(fit) == "stretch":
        return full_box(size)
    h, w = int(hw[0]), int(hw[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"empty image of shape {hw}")
    if w >= h:
        bw, bh = size, min(size, max(1, round(h * size / w)))
    else:
        bw, bh = min(size, max(1, round(w * size / h))), size
    return ((size - bw) // 2, (size - bh) // 2, bw, bh)


def _place(resized: np.ndarray, size: int, box: Box, border: int) -> np.ndarray:
    x, y, w, h = box
    if (w, h) == (size, size):
        return resized
    return cv2.copyMakeBorder(resized, y, size - y - h, x, size - x - w, border, value=0)


def letterbox(
    image: np.ndarray, size: int, fit: str, interpolation: int = cv2.INTER_AREA
) -> tuple[np.ndarray, Box]:
    """(H, W[, C]) image -> ((size, size[, C]) image of the same dtype, valid box).

    ``stretch``: ``cv2.resize`` to the square (the image itself when already that size, no
    copy). ``pad``: aspect-preserving resize (long side ``size``), centred, border replicated.
    ``interpolation`` is OpenCV's (area for images, the training-side and station default).
    """
    box = letterbox_box(image.shape[:2], size, fit)
    w, h = box[2], box[3]
    if image.shape[:2] != (h, w):
        image = cv2.resize(image, (w, h), interpolation=interpolation)
    return _place(image, size, box, cv2.BORDER_REPLICATE), box


def letterbox_mask(mask: np.ndarray, size: int, fit: str) -> tuple[np.ndarray, Box]:
    """(H, W) bool (or 0/nonzero) mask -> ((size, size) bool, valid box); nearest, pad False."""
    box = letterbox_box(mask.shape[:2], size, fit)
    w, h = box[2], box[3]
    m = mask.astype(np.uint8)
    if m.shape != (h, w):
        m = cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST)
    return _place(m, size, box, cv2.BORDER_CONSTANT) > 0, box


def crop_box(array: np.ndarray, box: Box) -> np.ndarray:
    """The valid region of a model-size (S, S[, ...]) array: a view, no copy."""
    x, y, w, h = box
    return array[y : y + h, x : x + w]


def unletterbox(
    amap: np.ndarray,
    box: Box,
    out_hw: tuple[int, int],
    interpolation: int = cv2.INTER_LINEAR,
) -> np.ndarray:
    """A model-size map (S, S) -> (H, W) over the original frame (or region of interest).

    Crops the valid ``box`` and resizes it to ``out_hw`` = (H, W) (bilinear by default; use
    ``cv2.INTER_NEAREST`` for masks, given as uint8). Undoes :func:`letterbox` for either fit.
    """
    crop = crop_box(amap, box)
    h, w = int(out_hw[0]), int(out_hw[1])
    if crop.shape[:2] == (h, w):
        return crop
    return cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=interpolation)


def roi_shape(frame_hw: tuple[int, ...], roi: tuple[int, int, int, int] | None) -> tuple[int, int]:
    """(h, w) of the part of an (H, W) frame a region of interest (x, y, w, h) keeps."""
    fh, fw = int(frame_hw[0]), int(frame_hw[1])
    if roi is None:
        return (fh, fw)
    x, y, w, h = roi
    return (max(0, min(h, fh - y)), max(0, min(w, fw - x)))


def scale_box(box: Box, src: int, dst: int) -> Box:
    """``box`` of a ``src`` square expressed in a ``dst`` square (edges rounded, >= 1 px)."""
    if src == dst:
        return box
    k = dst / src
    x, y, w, h = box
    x0, y0 = round(x * k), round(y * k)
    x1, y1 = round((x + w) * k), round((y + h) * k)
    return (x0, y0, max(1, min(dst, x1) - x0), max(1, min(dst, y1) - y0))


def choose_fit(shapes: Sequence[tuple[int, int]]) -> Fit:
    """The fit for a set of normal training images, from their (h, w) alone.

    ``pad`` when any image's w/h lies outside ``[1 / ASPECT_TOLERANCE, ASPECT_TOLERANCE]``
    (far from square) or the ratios vary by more than ``ASPECT_TOLERANCE`` between images;
    else ``stretch`` (squares, and nearly square sets, load exactly as before). No images:
    ``stretch``.
    """
    ratios = [w / h for h, w in shapes if h > 0 and w > 0]
    if not ratios:
        return "stretch"
    lo, hi = min(ratios), max(ratios)
    tol = ASPECT_TOLERANCE
    if lo < 1.0 / tol or hi > tol or hi / lo > tol:
        return "pad"
    return "stretch"


#: EXIF orientations that rotate by 90 degrees (OpenCV's decoder applies them, so w and h swap)
_TRANSPOSED = frozenset({5, 6, 7, 8})


def image_shapes(paths: Iterable[str | Path]) -> list[tuple[int, int]]:
    """(h, w) of each readable image file, from its header only (no decoding).

    Follows the EXIF orientation the way :func:`inspection.data.imageset.read_image` (OpenCV)
    does. Unreadable files are skipped (logged at debug level): the loaders skip them too.
    """
    from PIL import Image, UnidentifiedImageError

    shapes: list[tuple[int, int]] = []
    for path in paths:
        try:
            with Image.open(path) as im:
                w, h = im.size
                if im.format in {"JPEG", "TIFF", "PNG", "WEBP"}:
                    orientation = im.getexif().get(0x0112)
                    if orientation in _TRANSPOSED:
                        w, h = h, w
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            logger.debug("no image header in %s: %s", path, exc)
            continue
        shapes.append((int(h), int(w)))
    return shapes
