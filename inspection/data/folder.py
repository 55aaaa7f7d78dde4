"""MVTec AD-layout folders, the format users bring.

Layout: ``train/good/*.png``, ``test/<type>/*.png`` (``good`` for normal test images) and
``ground_truth/<type>/<stem>_mask.png`` for anomalous test images. Images of any size are
brought to the model's square side with a fit (:mod:`inspection.geometry`: ``stretch``
resizes, ``pad`` letterboxes; ``auto`` picks from the training images' shapes); masks with
nearest-neighbour interpolation. A test set always gets its training set's fit.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from inspection.data.imageset import GOOD, ImageSet, from_samples, read_sample
from inspection.errors import DatasetError, ImageDecodeError
from inspection.geometry import Box, Fit, check_fit, choose_fit, image_shapes

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def resolve_fit(fit: Fit | Literal["auto"], paths: list[Path]) -> Fit:
    """``fit``, or for ``"auto"`` :func:`~inspection.geometry.choose_fit` on the image headers
    of ``paths`` (the normal training images)."""
    if fit == "auto":
        chosen = choose_fit(image_shapes(paths))
        logger.info("fit %s chosen from the shapes of %d training images", chosen, len(paths))
        return chosen
    return check_fit(fit)


def load_normal_folder(
    folder: str | Path, size: int = 256, fit: Fit | Literal["auto"] = "stretch"
) -> ImageSet:
    """Every image under ``folder`` (subfolders too) as normal images at ``size`` x ``size``.

    ``fit``: ``stretch``, ``pad`` or ``auto`` (:func:`resolve_fit`); the set's ``fit`` says
    which was used. Unreadable files are skipped and logged; raises :class:`DatasetError` when
    none is left.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder of images")
    paths = sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not paths:
        raise DatasetError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    return _load(paths, [GOOD] * len(paths), [None] * len(paths), size, resolve_fit(fit, paths))


def load_mvtec_folder(
    root: str | Path, size: int = 256, fit: Fit | Literal["auto"] = "stretch"
) -> tuple[ImageSet, ImageSet]:
    """(train normal set, test set) of an MVTec-layout folder; corrupt files are skipped and logged.

    ``fit`` (``auto``: chosen from ``train/good``'s shapes) applies to both sets.
    """
    root = Path(root)
    train_dir = root / "train" / GOOD
    test_dir = root / "test"
    if not train_dir.is_dir() or not test_dir.is_dir():
        raise DatasetError(
            f"{root} is not in MVTec layout: need train/good/ and test/<type>/ folders"
        )
    train_paths = _images_in(train_dir)
    if not train_paths:
        raise DatasetError(f"no training images in {train_dir}")
    chosen = resolve_fit(fit, train_paths)
    train = _load(train_paths, [GOOD] * len(train_paths), [None] * len(train_paths), size, chosen)
    paths, types, masks = [], [], []
    for type_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        for p in _images_in(type_dir):
            paths.append(p)
            types.append(type_dir.name)
            mask = root / "ground_truth" / type_dir.name / f"{p.stem}_mask.png"
            masks.append(mask if type_dir.name != GOOD and mask.is_file() else None)
    if not paths:
        raise DatasetError(f"no test images under {test_dir}")
    return train, _load(paths, types, masks, size, chosen)


def _load(
    paths: list[Path], types: list[str], masks: list[Path | None], size: int, fit: Fit
) -> ImageSet:
    images, mask_arrays, boxes, kept_types, ids = [], [], [], [], []
    for path, kind, mask in zip(paths, types, masks, strict=True):
        try:
            image, mask_array, box = read_sample(path, mask, size, fit)
        except ImageDecodeError as exc:
            logger.warning("skipping %s: %s", path, exc)
            continue
        images.append(image)
        mask_arrays.append(mask_array)
        boxes.append(box)
        kept_types.append(kind)
        ids.append(str(path))
    if not images:
        raise DatasetError("every image failed to decode")
    kept_boxes: list[Box] | None = boxes if fit == "pad" else None
    return from_samples(images, mask_arrays, kept_types, ids, fit, kept_boxes)
