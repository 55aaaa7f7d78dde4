"""MKD self-checks: loss definition, tiny fit, offline gradient saliency."""

from __future__ import annotations

import numpy as np
import torch

from inspection.detectors.mkd import mkd_loss
from tests.conftest import synthetic_set
from tests.detectors._tiny import check_output, fit_and_predict


def test_loss_is_zero_for_identical_maps_and_scale_sensitive() -> None:
    a = [torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)]
    assert torch.allclose(mkd_loss(a, a, 0.5), torch.zeros(2), atol=1e-6)
    scaled = [2 * t for t in a]
    direction_only = mkd_loss(scaled, a, 0.0)
    assert torch.allclose(direction_only, torch.zeros(2), atol=1e-6)
    assert (mkd_loss(scaled, a, 0.5) > 0).all()


def test_tiny_fit_and_saliency() -> None:
    det, out, labels = fit_and_predict("mkd")
    check_output(out, labels)
    images = synthetic_set(64, 2, 0, seed=3).images
    sal = det.gradient_saliency(images)  # type: ignore[attr-defined]
    assert sal.shape == (2, 1, 64, 64) and sal.dtype == np.float32 and np.isfinite(sal).all()
    smooth = det.gradient_saliency(images, smooth_samples=2)  # type: ignore[attr-defined]
    assert smooth.shape == sal.shape


def test_map_max_score_mode_scores_by_the_map() -> None:
    _, out, labels = fit_and_predict("mkd", score_mode="map_max")
    check_output(out, labels)
    np.testing.assert_allclose(out.score, out.anomaly_map.max(axis=(1, 2, 3)), rtol=1e-6)
