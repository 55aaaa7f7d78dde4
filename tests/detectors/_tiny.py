"""Shared tiny synthetic fit used by the per-detector self-checks (64 px, seconds)."""

from __future__ import annotations

import numpy as np

from inspection.detectors import registry
from inspection.detectors.base import Detector, DetectorOutput
from tests.conftest import synthetic_set


def fit_and_predict(key: str, **overrides: object) -> tuple[Detector, DetectorOutput, np.ndarray]:
    """Fit ``key`` at its quick config on 24 synthetic normals; predict 8 normal + 8 defective."""
    cls = registry.get(key)
    base = cls.quick_config()  # type: ignore[attr-defined]
    config = cls.Config.model_validate({**base.model_dump(), **overrides})
    train = synthetic_set(64, 24, 0, seed=1)
    test = synthetic_set(64, 8, 8, seed=2)
    det = cls(config)
    det.fit(train.images)
    return det, det.predict(test.images), test.labels


def check_output(out: DetectorOutput, labels: np.ndarray, size: int = 64) -> None:
    """Shapes, dtypes, finiteness, and defective > normal on average."""
    n = len(labels)
    assert out.score.shape == (n,) and out.score.dtype == np.float32
    assert out.anomaly_map.shape == (n, 1, size, size) and out.anomaly_map.dtype == np.float32
    assert np.isfinite(out.score).all() and np.isfinite(out.anomaly_map).all()
    assert out.score[labels == 1].mean() > out.score[labels == 0].mean()
