"""In-memory image sets: the one container datasets hand to detectors and evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from inspection.errors import ImageDecodeError
from inspection.geometry import FITS, Box, check_fit, full_box, letterbox, letterbox_mask, scale_box

GOOD = "good"


@dataclass
class ImageSet:
    """Images brought to a square side (:mod:`inspection.geometry`), with masks and labels.

    Attributes:
        images: (N, S, S, 3) uint8 RGB.
        masks: (N, S, S) bool ground-truth defect pixels (all False for normal images and in
            the padding).
        defect_types: N labels; ``"good"`` for normal images.
        ids: N identifiers (file paths or synthetic indices).
        fit: how the images were brought to the square: ``"stretch"`` or ``"pad"``
            (:data:`inspection.geometry.Fit`); a model trained on the set records it.
        boxes: (N, 4) int64 valid region ``(x, y, w, h)`` of each image in model pixels;
            None: every image fills the whole square (always so for ``stretch``).
    """

    images: np.ndarray
    masks: np.ndarray
    defect_types: list[str]
    ids: list[str] = field(default_factory=list)
    fit: str = "stretch"
    boxes: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        if not self.ids:
            self.ids = [str(i) for i in range(n)]
        if not (len(self.masks) == len(self.defect_types) == len(self.ids) == n):
            raise ValueError("ImageSet fields must have the same length")
        if self.fit not in FITS:
            raise ValueError(f"ImageSet fit {self.fit!r}: use one of {', '.join(FITS)}")
        if self.boxes is not None:
            self.boxes = np.asarray(self.boxes, dtype=np.int64).reshape(-1, 4)
            if len(self.boxes) != n:
                raise ValueError(f"ImageSet has {n} images and {len(self.boxes)} boxes")

    @property
    def size(self) -> int:
        """The square side S in pixels (0 for an empty set)."""
        return int(self.images.shape[1]) if self.images.ndim == 4 else 0

    def valid_boxes(self) -> np.ndarray:
        """(N, 4) int64 valid region of every image (the whole square where ``boxes`` is None)."""
        if self.boxes is not None:
            return self.boxes
        return np.tile(np.array(full_box(self.size), np.int64), (len(self), 1))

    def box(self, i: int) -> Box:
        """Valid region ``(x, y, w, h)`` of image ``i`` in model pixels."""
        if self.boxes is None:
            return full_box(self.size)
        x, y, w, h = (int(v) for v in self.boxes[i])
        return (x, y, w, h)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labels(self) -> np.ndarray:
        """(N,) int 1 for anomalous, 0 for normal."""
        return np.array([t != GOOD for t in self.defect_types], dtype=np.int64)

    def subset(self, index: Sequence[int] | np.ndarray) -> ImageSet:
        idx = np.asarray(index, dtype=np.int64)
        return ImageSet(
            self.images[idx],
            self.masks[idx],
            [self.defect_types[i] for i in idx],
            [self.ids[i] for i in idx],
            self.fit,
            self.boxes[idx] if self.boxes is not None else None,
        )

    def normal(self) -> ImageSet:
        return self.subset(np.flatnonzero(self.labels == 0))

    def resized(self, size: int) -> ImageSet:
        """The same set at side ``size`` (images: area interpolation; masks: nearest).

        Boxes are scaled with the images. A padded set resized this way differs slightly from
        one loaded at ``size`` (the border pixels blend into the padding); reload for exact
        station parity.
        """
        if self.images.shape[1:3] == (size, size):
            return self
        images = np.stack(
            [cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in self.images]
        )
        masks = np.stack(
            [
                cv2.resize(m.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0
                for m in self.masks
            ]
        )
        boxes = None
        if self.boxes is not None:
            src = self.size
            boxes = np.array([scale_box(self.box(i), src, size) for i in range(len(self))])
        return ImageSet(images, masks, list(self.defect_types), list(self.ids), self.fit, boxes)

    @staticmethod
    def concat(sets: Sequence[ImageSet]) -> ImageSet:
        """One set of all ``sets`` (same side and fit; raises ValueError when fits differ)."""
        fits = {s.fit for s in sets}
        if len(fits) > 1:
            raise ValueError(f"cannot concatenate image sets of different fits {sorted(fits)}")
        boxes = None
        if any(s.boxes is not None for s in sets):
            boxes = np.concatenate([s.valid_boxes() for s in sets])
        return ImageSet(
            np.concatenate([s.images for s in sets]),
            np.concatenate([s.masks for s in sets]),
            [t for s in sets for t in s.defect_types],
            [i for s in sets for i in s.ids],
            fits.pop() if fits else "stretch",
            boxes,
        )


def read_image(path: str | Path, size: int | None = None, fit: str = "stretch") -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB (gray is replicated), optionally brought to
    ``size`` x ``size`` with ``fit`` (:func:`inspection.geometry.letterbox`).

    Raises :class:`ImageDecodeError` for a missing, truncated or non-image file.
    """
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    if data is None or data.size == 0:
        raise ImageDecodeError(f"cannot read image {path}: missing or empty")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageDecodeError(f"cannot decode image {path}: corrupt or not an image")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if size is not None:
        image, _ = letterbox(image, size, fit)
    return image


def read_mask(
    path: str | Path | None,
    size: int,
    shape: tuple[int, int] | None = None,
    fit: str = "stretch",
) -> np.ndarray:
    """(size, size) bool mask from a PNG (> 127 is defect); all False when ``path`` is None.

    ``shape``: (H, W) of the image the mask belongs to; with ``fit="pad"`` a mask of another
    size is first resized to it (nearest), so mask and image share one valid box. The padding
    is False.
    """
    if path is None:
        return np.zeros((size, size), dtype=bool)
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise ImageDecodeError(f"cannot decode mask {path}")
    if check_fit(fit) == "stretch":
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
        return mask > 127
    if shape is not None and mask.shape != tuple(shape):
        mask = cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    out, _ = letterbox_mask(mask > 127, size, fit)
    return out


def read_sample(
    image_path: str | Path, mask_path: str | Path | None, size: int, fit: str = "stretch"
) -> tuple[np.ndarray, np.ndarray, Box]:
    """(image (size, size, 3) uint8 RGB, mask (size, size) bool, valid box) of one file pair.

    The same pixels :func:`inspection.runtime.preprocess` gives the station for that image.
    """
    image = read_image(image_path)
    hw = (int(image.shape[0]), int(image.shape[1]))
    square, box = letterbox(image, size, fit)
    return square, read_mask(mask_path, size, hw, fit), box


def from_samples(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    defect_types: Sequence[str | None],
    ids: Sequence[str],
    fit: str = "stretch",
    boxes: Sequence[Box] | np.ndarray | None = None,
) -> ImageSet:
    """Stack equally sized samples; a ``None`` defect type means good.

    ``boxes``: valid region of each sample (None: the whole square).
    """
    return ImageSet(
        np.stack(list(images)).astype(np.uint8),
        np.stack(list(masks)).astype(bool),
        [t if t is not None else GOOD for t in defect_types],
        list(ids),
        fit,
        np.asarray(boxes, dtype=np.int64).reshape(-1, 4) if boxes is not None else None,
    )
