"""Per-image photometric standardisation (``photometric``): invariance, the auto rule, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inspection import training
from inspection.detectors import registry
from inspection.detectors.base import EXPOSURE_CV_LIMIT, Normalize, exposure_cv
from inspection.runtime import OpenVinoModel
from tests.conftest import synthetic_set


def _exposures(images: np.ndarray) -> np.ndarray:
    """The same parts shot at four exposures (gain 0.6 .. 1.2), as acquisition sessions differ."""
    gains = np.resize(np.array([0.6, 0.8, 1.0, 1.2], np.float32), len(images))
    return np.clip(images * gains[:, None, None, None], 0, 255).astype(np.uint8)


def test_standardize_removes_gain_and_offset() -> None:
    x = torch.rand(2, 3, 16, 16) * 0.5 + 0.2
    norm = Normalize((0.5,) * 3, (0.5,) * 3, standardize=True)
    torch.testing.assert_close(norm(x * 0.7 + 0.05), norm(x), atol=1e-3, rtol=1e-3)
    plain = Normalize((0.5,) * 3, (0.5,) * 3)
    assert not torch.allclose(plain(x * 0.7), plain(x))


def test_auto_standardizes_only_when_exposure_varies() -> None:
    cls = registry.get("padim")
    steady = synthetic_set(64, 16, 0, seed=1).images
    assert exposure_cv(steady) < EXPOSURE_CV_LIMIT < exposure_cv(_exposures(steady))
    det = cls(cls.quick_config())
    assert det.config.photometric == "auto"
    det.fit(steady)
    assert det.config.photometric == "none"
    det = cls(cls.quick_config())
    det.fit(_exposures(steady))
    assert det.config.photometric == "standardize"
    test = synthetic_set(64, 4, 4, seed=2).images
    darker = (test * 0.7).astype(np.uint8)
    np.testing.assert_allclose(det.predict(darker).score, det.predict(test).score, rtol=0.05)


@pytest.mark.parametrize("key", ["padim", "mkd"])
def test_standardized_model_exports_and_reloads(tmp_path: Path, key: str) -> None:
    """The standardisation travels inside the graph: OpenVINO matches torch, reload keeps it."""
    cls = registry.get(key)
    cfg = cls.quick_config().model_copy(update={"photometric": "standardize"})
    if "epochs" in cls.Config.model_fields:
        cfg = cfg.model_copy(update={"epochs": 1})
    trained = training.train(cls(cfg), synthetic_set(64, 20, 0, seed=1))
    bundle = training.export_openvino(trained, tmp_path / "bundle")
    test = synthetic_set(64, 4, 4, seed=2).images
    torch_scores = trained.detector.predict(test).score
    ov = OpenVinoModel(bundle).predict(test).raw_score
    np.testing.assert_allclose(ov, torch_scores, rtol=1e-2, atol=1e-3)
    again = training.load_trained(bundle).detector
    assert again.config.photometric == "standardize" and again.normalize.standardize
