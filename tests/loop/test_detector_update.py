"""The closed-form PaDiM update equals refitting on old + new normals (up to float rounding)."""

from __future__ import annotations

import numpy as np
import pytest

from inspection.detectors import registry
from inspection.loop.detector_update import add_normals, supports_update
from tests.conftest import synthetic_set


@pytest.fixture(scope="module")
def parts() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    normals = synthetic_set(64, 24, 0, seed=3).images
    test = synthetic_set(64, 4, 4, seed=4).images
    return normals[:16], normals[16:], test


def test_update_matches_refit(parts: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    old, new, test = parts
    cls = registry.get("padim")
    updated = cls(cls.quick_config())
    updated.fit(old)
    assert supports_update(updated)
    assert add_normals(updated, len(old), new) == len(old) + len(new)
    refit = cls(cls.quick_config())
    refit.fit(np.concatenate([old, new]))
    a, b = updated.predict(test), refit.predict(test)
    np.testing.assert_allclose(a.score, b.score, rtol=2e-3)
    np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=5e-3, atol=1e-3)
    before = cls(cls.quick_config())
    before.fit(old)
    assert not np.allclose(before.predict(test).score, b.score, rtol=1e-3)  # it did change


def test_update_rejects_other_detectors() -> None:
    cls = registry.get("stfpm")
    detector = cls(cls.quick_config())
    assert not supports_update(detector)
    with pytest.raises(ValueError, match="padim only"):
        add_normals(detector, 10, np.zeros((1, 64, 64, 3), np.uint8))
