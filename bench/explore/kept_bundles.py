"""Shared by explorations that score test images with the bundles a suite run kept.

``inspection bench suite`` keeps each cell's exported bundle under
``<bundles dir>/<data set>/<detector>`` (:func:`inspection.bench.retime.default_bundles_dir`);
these helpers find them and score images with them on OpenVINO, as a station would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def suite_bundles(dataset: str, override: Path | None = None) -> Path:
    """Folder of the kept suite bundles of ``dataset`` (``override``: another bundles dir)."""
    from inspection.bench.retime import default_bundles_dir
    from inspection.bench.suite import PROTOCOL

    return (override or default_bundles_dir(PROTOCOL)) / dataset


def raw_scores(bundle: Path, images: np.ndarray, threads: int = 2, batch: int = 8) -> np.ndarray:
    """(N,) raw image scores of ``images`` ((N, S, S, 3) uint8) by the bundle at ``bundle``."""
    from inspection.runtime import OpenVinoModel

    model = OpenVinoModel(bundle, num_threads=threads)
    return np.concatenate(
        [model.predict(images[i : i + batch]).raw_score for i in range(0, len(images), batch)]
    )
