"""What the station needs of a model: the scoring protocol, the default OpenVINO loader, the
model in use (swapped as a whole between batches) and the thresholds applied to it.

Imports no torch and no anomalib (:mod:`inspection.runtime` is OpenVINO and NumPy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from inspection.runtime import Prediction
from inspection.station.config import DetectorSettings


class Pending(Protocol):
    """An inference in progress (:class:`inspection.runtime.PendingPrediction` fits)."""

    def wait(self, copy_maps: bool = True) -> Prediction:
        """Block until done; the batch's :class:`Prediction`.

        ``copy_maps=False`` allows the maps to be views valid until the next submit on the
        same instance (the worker copies those it keeps).
        """
        ...


class ScoringModel(Protocol):
    """What the pipeline needs of a model (:class:`inspection.runtime.OpenVinoModel` fits).

    A model may also offer ``submit(images) -> Pending`` (start inference, return at once);
    the scoring workers then keep ``requests_per_worker`` batches in flight, one model
    instance (inference request) each. Models without it are called synchronously. A model
    may say how frames become its square input with ``fit`` (``"stretch"`` or ``"pad"``,
    :mod:`inspection.geometry`); without it frames are stretched.
    """

    size: int
    image_threshold: float
    pixel_threshold: float

    def predict(self, images: np.ndarray) -> Prediction:
        """(N, S, S, 3) uint8 RGB -> :class:`Prediction` (normalised score 0.5 at threshold)."""
        ...


#: ``(bundle folder, detector settings, frames per call: exactly N (fewer are padded), or None:
#: any) -> model``
ModelLoader = Callable[[Path, DetectorSettings, int | None], ScoringModel]


def load_openvino(
    bundle: Path, settings: DetectorSettings, batch_size: int | None = None
) -> ScoringModel:
    """The default model loader: an :class:`OpenVinoModel` with the station's device settings,
    compiled for exactly ``batch_size`` frames per call when given (static shapes run faster;
    fewer frames are padded), else for any."""
    from inspection.runtime import OpenVinoModel

    return OpenVinoModel(
        bundle,
        device=settings.device,
        num_threads=settings.num_threads,
        inference_precision=settings.inference_precision,
        performance_hint=settings.performance_hint,
        cpu_pinning=settings.cpu_pinning,
        batch_size=batch_size,
        cache_dir=settings.cache_dir if settings.compile_cache else None,
    )


# -- model and thresholds ----------------------------------------------------------------------


@dataclass(frozen=True)
class ActiveModel:
    """The model in use, swapped as a whole (a reference assignment) between batches.

    ``models`` holds one instance per scoring worker, each with its own inference request
    (with the throughput hint they share one compiled model's streams); ``signature``
    identifies the loaded bundle (``model.json`` mtime and size) in bundle mode.
    """

    models: tuple[ScoringModel, ...]
    version_id: int | None
    bundle: Path
    signature: tuple[int, int] | None = None
    depth: int = 1  # instances (requests) per worker: models[w * depth : (w + 1) * depth]

    def instance(self, worker: int, slot: int) -> ScoringModel:
        """The model instance scoring worker ``worker`` uses for in-flight slot ``slot``."""
        return self.models[(worker * self.depth + slot % self.depth) % len(self.models)]

    @property
    def model(self) -> ScoringModel:
        """The first instance (all are the same model)."""
        return self.models[0]


@dataclass(frozen=True)
class Thresholds:
    """Thresholds in use: ``image`` on the normalised score; ``pixel`` raw (None: model's)."""

    image: float = 0.5
    pixel: float | None = None


def bundle_signature(bundle: Path) -> tuple[int, int] | None:
    try:
        st = (bundle / "model.json").stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)
