"""NEU hot-rolled steel-strip surface defects, protocol ``neu-open`` (typing only).

Data: K. Song, Y. Yan, "A noise robust method based on completed local binary patterns for
hot-rolled steel strip surface defects", Applied Surface Science 285 (2013) 858-864; Y. He,
K. Song, Q. Meng, Y. Yan, "An End-to-end Steel Surface Defect Detection Approach via Fusing
Multiple Hierarchical Features", IEEE Trans. Instrumentation and Measurement 69(4) (2020).

Layout ``<root>/<type>/<type>_<n>.png``: six types, 300 grayscale 200 x 200 images each, no
defect-free images. Protocol ``neu-open`` (``../shared/data/README.md``), implemented exactly:
leave one type out (six folds, in the order of :data:`DEFECT_TYPES`); per known type the images
whose number (the digits of the stem) modulo 10 is 0, 3 or 7 are test (30 %), the rest train;
test = the known types' test images plus every image of the held-out type.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from inspection.data.imageset import ImageSet, from_samples, read_sample
from inspection.data.magnetic_tile import OpenSetFold
from inspection.errors import DatasetError

logger = logging.getLogger(__name__)

DEFECT_TYPES: tuple[str, ...] = (
    "crazing",
    "inclusion",
    "patches",
    "pitted_surface",
    "rolled-in_scale",
    "scratches",
)
#: Image numbers whose last digit is one of these are test images of a known type.
TEST_DIGITS = frozenset({0, 3, 7})
_DIGITS = re.compile(r"(\d+)")


@dataclass(frozen=True)
class SteelImage:
    """One image file: defect type, its number (digits of the stem) and path."""

    cls: str
    number: int
    path: Path

    @property
    def is_test(self) -> bool:
        """True when the protocol puts this image in a known type's 30 % test split."""
        return self.number % 10 in TEST_DIGITS


def scan(root: str | Path) -> list[SteelImage]:
    """Every image, sorted by type then file name.

    Raises:
        DatasetError: the root or a type folder is missing, or a stem carries no number.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"NEU surface data not found at {root}")
    items: list[SteelImage] = []
    for cls in DEFECT_TYPES:
        folder = root / cls
        if not folder.is_dir():
            raise DatasetError(f"missing type folder {folder}")
        for path in sorted(folder.glob("*.png")):
            digits = "".join(_DIGITS.findall(path.stem))
            if not digits:
                raise DatasetError(f"no image number in {path.name}")
            items.append(SteelImage(cls, int(digits), path))
    return items


def _load(items: list[SteelImage], size: int) -> ImageSet:
    samples = [read_sample(t.path, None, size, "stretch") for t in items]
    return from_samples(
        [s[0] for s in samples],
        [s[1] for s in samples],
        [t.cls for t in items],
        [str(t.path) for t in items],
        "stretch",
    )


def neu_open(root: str | Path, size: int = 256) -> list[OpenSetFold]:
    """The six ``neu-open`` folds; images are square already and only resized to ``size``.

    Every image is decoded once and shared by the folds' :class:`ImageSet` objects.
    """
    items = scan(root)
    loaded = _load(items, size)
    index = {str(t.path): i for i, t in enumerate(items)}
    folds = []
    for unknown in DEFECT_TYPES:
        known = tuple(c for c in DEFECT_TYPES if c != unknown)
        train = [t for t in items if t.cls in known and not t.is_test]
        test = [t for t in items if (t.cls in known and t.is_test) or t.cls == unknown]
        folds.append(
            OpenSetFold(unknown, known, _subset(loaded, train, index), _subset(loaded, test, index))
        )
    logger.info("neu-open: %d images, %d folds", len(items), len(folds))
    return folds


def _subset(loaded: ImageSet, items: list[SteelImage], index: dict[str, int]) -> ImageSet:
    rows = [index[str(t.path)] for t in items]
    return ImageSet(
        loaded.images[rows],
        loaded.masks[rows],
        [loaded.defect_types[i] for i in rows],
        [loaded.ids[i] for i in rows],
        "stretch",
    )
