"""Magnetic-tile surface defects (Huang, Qiu, Yuan, The Visual Computer 36, 2020).

Implements the fixed protocols of ``../shared/data/README.md`` exactly:

* ``mt-exp`` (one-class): train = ``MT_Free`` groups exp0..exp4 (634 images); test = ``MT_Free``
  exp5, exp6 (318 normal) + every image of the five defect classes (392 anomalous, with masks).
* ``mt-open`` (open-set typing, five folds): in fold k one defect class is unknown; train = known
  classes' images of exp0..exp4; test = known classes' exp5, exp6 + every image of the unknown.

Masks are binarised with > 127 and compared at 256 x 256. The images come in many shapes
(crops of tiles); ``fit`` (:mod:`inspection.geometry`) says how they become the model's
square: ``stretch`` (the protocol's default, and every published number here), ``pad`` or
``auto`` (chosen from the training images' shapes); the test set gets the train set's fit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from inspection.data.imageset import GOOD, ImageSet, from_samples, read_sample
from inspection.errors import DatasetError
from inspection.geometry import Fit, check_fit, choose_fit, image_shapes

DEFECT_CLASSES: tuple[str, ...] = ("Blowhole", "Break", "Crack", "Fray", "Uneven")
NORMAL_CLASS = "Free"
TRAIN_GROUPS = frozenset({0, 1, 2, 3, 4})
TEST_GROUPS = frozenset({5, 6})
_NAME = re.compile(r"exp(\d+)_num_(\d+)\.jpg$")


@dataclass(frozen=True)
class TileImage:
    """One image file of the release: class, acquisition group and paths."""

    cls: str
    group: int
    image: Path
    mask: Path


def scan(root: str | Path) -> list[TileImage]:
    """Every image of the release, sorted by class then file name."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"magnetic-tile data not found at {root}")
    items: list[TileImage] = []
    for cls in (NORMAL_CLASS, *DEFECT_CLASSES):
        folder = root / f"MT_{cls}" / "Imgs"
        if not folder.is_dir():
            raise DatasetError(f"missing class folder {folder}")
        for path in sorted(folder.glob("*.jpg")):
            match = _NAME.search(path.name)
            if match is None:
                continue
            items.append(TileImage(cls, int(match.group(1)), path, path.with_suffix(".png")))
    return items


def group_of(image_id: str) -> int | None:
    """Acquisition group ``E`` of an ``exp<E>_num_<N>.jpg`` path (None for other names)."""
    match = _NAME.search(image_id)
    return int(match.group(1)) if match else None


def same_group_subset(test: ImageSet) -> np.ndarray:
    """Indices of the ``mt-exp`` test images shot in the test normals' groups (exp5, exp6).

    The protocol's test normals come from those two groups only and its defective images from
    every group, shot at different exposures, so an image score can separate the two halves by
    the group alone (``bench/explore/mt_exp_confound.py``: mean grey level 0.78 AUROC). On this
    subset both classes share the groups.
    """
    return np.array([i for i, x in enumerate(test.ids) if group_of(x) in TEST_GROUPS], np.int64)


def same_group_auroc(scores: np.ndarray, test: ImageSet, threshold: float) -> float | None:
    """Image AUROC of ``scores`` (N,) over :func:`same_group_subset` of ``test``."""
    from inspection.evaluation import image_metrics

    idx = same_group_subset(test)
    return image_metrics(scores[idx], test.labels[idx], threshold)["image_auroc"]


def _load(items: list[TileImage], size: int, fit: Fit = "stretch") -> ImageSet:
    samples = [
        read_sample(t.image, t.mask if t.cls != NORMAL_CLASS else None, size, fit) for t in items
    ]
    types = [GOOD if t.cls == NORMAL_CLASS else t.cls for t in items]
    return from_samples(
        [s[0] for s in samples],
        [s[1] for s in samples],
        types,
        [str(t.image) for t in items],
        fit,
        [s[2] for s in samples] if fit == "pad" else None,
    )


def _fit_for(fit: Fit | Literal["auto"], train: list[TileImage]) -> Fit:
    return choose_fit(image_shapes(t.image for t in train)) if fit == "auto" else check_fit(fit)


def mt_exp(
    root: str | Path, size: int = 256, fit: Fit | Literal["auto"] = "stretch"
) -> tuple[ImageSet, ImageSet]:
    """(train normal set, test set) of protocol ``mt-exp``, both with ``fit``."""
    items = scan(root)
    train = [t for t in items if t.cls == NORMAL_CLASS and t.group in TRAIN_GROUPS]
    test = [
        t
        for t in items
        if (t.cls == NORMAL_CLASS and t.group in TEST_GROUPS) or t.cls != NORMAL_CLASS
    ]
    chosen = _fit_for(fit, train)
    return _load(train, size, chosen), _load(test, size, chosen)


@dataclass(frozen=True)
class OpenSetFold:
    """One ``mt-open`` fold: ``unknown`` is the held-out defect class."""

    unknown: str
    known: tuple[str, ...]
    train: ImageSet
    test: ImageSet


def mt_open(
    root: str | Path, size: int = 256, fit: Fit | Literal["auto"] = "stretch"
) -> list[OpenSetFold]:
    """The five ``mt-open`` folds, in the order of :data:`DEFECT_CLASSES` (``auto``: fit chosen
    per fold from its training images)."""
    items = [t for t in scan(root) if t.cls != NORMAL_CLASS]
    folds = []
    for unknown in DEFECT_CLASSES:
        known = tuple(c for c in DEFECT_CLASSES if c != unknown)
        train = [t for t in items if t.cls in known and t.group in TRAIN_GROUPS]
        test = [t for t in items if (t.cls in known and t.group in TEST_GROUPS) or t.cls == unknown]
        chosen = _fit_for(fit, train)
        folds.append(
            OpenSetFold(unknown, known, _load(train, size, chosen), _load(test, size, chosen))
        )
    return folds
