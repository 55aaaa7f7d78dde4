"""The root model's training normals for a retraining job: from a folder, from a station's
synthetic bootstrap, or none (then the holdout and the refiner use confirmed normals only)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from inspection.data.imageset import ImageSet
from inspection.errors import ConfigError
from inspection.loop.config import RetrainSettings
from inspection.station.config import StationConfig

#: The root model's training normals at a model input size, in its training order (brought to
#: the square with the root model's fit, ``model.json`` ``input.fit``).
NormalSource = Callable[[int], ImageSet]


def folder_normals(
    folder: str | Path, roi: tuple[int, int, int, int] | None, fit: str = "stretch"
) -> NormalSource:
    """Normal images of a folder (sorted by name), preprocessed like the station does (region
    of interest, the model's ``fit``)."""
    from inspection.data.imageset import read_image
    from inspection.runtime import preprocess_box

    root = Path(folder)

    def load(size: int) -> ImageSet:
        paths = sorted(
            p
            for p in root.iterdir()
            if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
        )
        if not paths:
            raise ConfigError(f"normals_dir {root} holds no images")
        done = [preprocess_box(read_image(p), size, roi, fit) for p in paths]
        return _normal_set([d[0] for d in done], [d[1] for d in done], [str(p) for p in paths], fit)

    return load


def _normal_set(images: list[np.ndarray], boxes: list[Any], ids: list[str], fit: str) -> ImageSet:
    from inspection.data.imageset import from_samples

    masks = [np.zeros(im.shape[:2], bool) for im in images]
    return from_samples(
        images, masks, [None] * len(images), ids, fit, boxes if fit == "pad" else None
    )


def bootstrap_normals(config: StationConfig, fit: str = "stretch") -> NormalSource:
    """The synthetic good parts a bootstrapped station's first model was trained on (with the
    model's ``fit``)."""
    from inspection.data.synthetic import SyntheticLine
    from inspection.runtime import preprocess_box
    from inspection.station.bootstrap import TRAIN_INDEX_OFFSET

    cam = config.camera
    spec = config.detector.bootstrap
    if cam.type != "synthetic" or spec is None:
        raise ConfigError(f"station {config.id} has no synthetic bootstrap")
    roi = config.roi.as_tuple() if config.roi is not None else None

    def load(size: int) -> ImageSet:
        line = SyntheticLine(family=cam.family, size=cam.size, seed=cam.seed)
        samples = line.normals(spec.normals, start=TRAIN_INDEX_OFFSET)
        done = [preprocess_box(s.image, size, roi, fit) for s in samples]
        ids = [str(s.index) for s in samples]
        return _normal_set([d[0] for d in done], [d[1] for d in done], ids, fit)

    return load


def default_normal_source(
    config: StationConfig | None, settings: RetrainSettings, fit: str = "stretch"
) -> NormalSource | None:
    """``settings.normals_dir``, else the station's synthetic bootstrap, else None (images
    brought to the square with the root model's ``fit``)."""
    roi = config.roi.as_tuple() if config is not None and config.roi is not None else None
    if settings.normals_dir is not None:
        return folder_normals(settings.normals_dir, roi, fit)
    if (
        config is not None
        and config.detector.bootstrap is not None
        and config.camera.type == "synthetic"
    ):
        return bootstrap_normals(config, fit)
    return None


def as_normals(
    source: NormalSource | ImageSet | None, size: int, fit: str = "stretch"
) -> ImageSet | None:
    """``source`` at ``size`` px, checked against the model's size and ``fit``; None: none."""
    if source is None:
        return None
    normals = source if isinstance(source, ImageSet) else source(size)
    if len(normals) and normals.images.shape[1] != size:
        raise ConfigError(
            f"base normals are {normals.images.shape[1]} px, the model needs {size} px"
        )
    if len(normals) and normals.fit != fit:
        raise ConfigError(f"base normals are loaded with fit {normals.fit}, the model's is {fit}")
    return normals
