"""In-memory image sets: the one container datasets hand to detectors and evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from inspection.errors import ImageDecodeError

GOOD = "good"


@dataclass
class ImageSet:
    """Images resized to a square side, with masks and labels.

    Attributes:
        images: (N, S, S, 3) uint8 RGB.
        masks: (N, S, S) bool ground-truth defect pixels (all False for normal images).
        defect_types: N labels; ``"good"`` for normal images.
        ids: N identifiers (file paths or synthetic indices).
    """

    images: np.ndarray
    masks: np.ndarray
    defect_types: list[str]
    ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.images)
        if not self.ids:
            self.ids = [str(i) for i in range(n)]
        if not (len(self.masks) == len(self.defect_types) == len(self.ids) == n):
            raise ValueError("ImageSet fields must have the same length")

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
        )

    def normal(self) -> ImageSet:
        return self.subset(np.flatnonzero(self.labels == 0))

    def resized(self, size: int) -> ImageSet:
        """The same set at side ``size`` (images: area interpolation; masks: nearest)."""
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
        return ImageSet(images, masks, list(self.defect_types), list(self.ids))

    @staticmethod
    def concat(sets: Sequence[ImageSet]) -> ImageSet:
        return ImageSet(
            np.concatenate([s.images for s in sets]),
            np.concatenate([s.masks for s in sets]),
            [t for s in sets for t in s.defect_types],
            [i for s in sets for i in s.ids],
        )


def read_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB (gray is replicated), optionally resized.

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
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return image


def read_mask(
    path: str | Path | None, size: int, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """(size, size) bool mask from a PNG (> 127 is defect); all False when ``path`` is None."""
    if path is None:
        return np.zeros((size, size), dtype=bool)
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise ImageDecodeError(f"cannot decode mask {path}")
    mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
    return mask > 127


def from_samples(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    defect_types: Sequence[str | None],
    ids: Sequence[str],
) -> ImageSet:
    """Stack equally sized samples; a ``None`` defect type means good."""
    return ImageSet(
        np.stack(list(images)).astype(np.uint8),
        np.stack(list(masks)).astype(bool),
        [t if t is not None else GOOD for t in defect_types],
        list(ids),
    )
