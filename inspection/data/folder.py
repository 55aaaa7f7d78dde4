"""MVTec AD-layout folders, the format users bring.

Layout: ``train/good/*.png``, ``test/<type>/*.png`` (``good`` for normal test images) and
``ground_truth/<type>/<stem>_mask.png`` for anomalous test images. Images of any size are
resized to the model's square side; masks with nearest-neighbour interpolation.
"""

from __future__ import annotations

import logging
from pathlib import Path

from inspection.data.imageset import GOOD, ImageSet, from_samples, read_image, read_mask
from inspection.errors import DatasetError, ImageDecodeError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_normal_folder(folder: str | Path, size: int = 256) -> ImageSet:
    """Every image under ``folder`` (subfolders too) as normal images at ``size`` x ``size``.

    Unreadable files are skipped and logged; raises :class:`DatasetError` when none is left.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder of images")
    paths = sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not paths:
        raise DatasetError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    return _load(paths, [GOOD] * len(paths), [None] * len(paths), size)


def load_mvtec_folder(root: str | Path, size: int = 256) -> tuple[ImageSet, ImageSet]:
    """(train normal set, test set) of an MVTec-layout folder; corrupt files are skipped and logged."""
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
    train = _load(train_paths, [GOOD] * len(train_paths), [None] * len(train_paths), size)
    paths, types, masks = [], [], []
    for type_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        for p in _images_in(type_dir):
            paths.append(p)
            types.append(type_dir.name)
            mask = root / "ground_truth" / type_dir.name / f"{p.stem}_mask.png"
            masks.append(mask if type_dir.name != GOOD and mask.is_file() else None)
    if not paths:
        raise DatasetError(f"no test images under {test_dir}")
    return train, _load(paths, types, masks, size)


def _load(paths: list[Path], types: list[str], masks: list[Path | None], size: int) -> ImageSet:
    images, mask_arrays, kept_types, ids = [], [], [], []
    for path, kind, mask in zip(paths, types, masks, strict=True):
        try:
            images.append(read_image(path, size))
            mask_arrays.append(read_mask(mask, size))
        except ImageDecodeError as exc:
            logger.warning("skipping %s: %s", path, exc)
            continue
        kept_types.append(kind)
        ids.append(str(path))
    if not images:
        raise DatasetError("every image failed to decode")
    return from_samples(images, mask_arrays, kept_types, ids)
