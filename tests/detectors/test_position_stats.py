"""The ``map_max_std`` score mode: anomaly maps standardised per position by normal statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inspection import training
from inspection.detectors import registry
from inspection.detectors.base import STANDARDIZED_MAX
from inspection.errors import ModelFileError
from inspection.runtime import OpenVinoModel
from tests.conftest import synthetic_set
from tests.detectors._tiny import check_output, fit_and_predict

ALL = registry.keys()
KEYS = [k for k in ALL if STANDARDIZED_MAX in registry.get(k).score_modes]


def test_offered_by_the_map_based_detectors() -> None:
    assert set(KEYS) == {"memae", "memae_feat", "mkd", "ocgan", "stfpm"}


@pytest.mark.parametrize("key", KEYS)
def test_standardised_maps_round_trip_and_export(key: str, tmp_path: Path) -> None:
    det, out, labels = fit_and_predict(key, score_mode=STANDARDIZED_MAX)
    check_output(out, labels)
    np.testing.assert_allclose(out.score, out.anomaly_map.reshape(len(out.score), -1).max(axis=1))
    assert det.torch_model.score_mode == "map_max"  # the model's raw map, standardised after it
    # On the normal images the statistics come from, every position has mean 0, std ~1.
    train = det.predict(synthetic_set(64, 24, 0, seed=1).images).anomaly_map
    assert np.abs(train.mean(axis=0)).max() < 1e-3
    assert np.isclose(np.median(train.std(axis=0)), 1.0, atol=0.05)

    det.save(tmp_path / "saved")
    again = registry.get(key).load(tmp_path / "saved")
    test = synthetic_set(64, 8, 8, seed=2).images
    np.testing.assert_allclose(again.predict(test).score, out.score, rtol=1e-5, atol=1e-5)

    trained = training.TrainedModel(det, training.calibrate(out.score, out.anomaly_map), 0.0, 24, 8)
    training.export_openvino(trained, tmp_path / "bundle")
    pred = OpenVinoModel(tmp_path / "bundle").predict(test)
    cls = registry.get(key)
    scale = float(np.ptp(out.anomaly_map)) or 1.0
    tol = {"rtol": cls.export_rtol, "atol": cls.export_atol * scale}
    np.testing.assert_allclose(pred.raw_score, out.score, **tol)
    np.testing.assert_allclose(pred.anomaly_map, out.anomaly_map[:, 0], **tol)

    # A model file claiming the mode without its statistics is refused, not run unstandardised.
    import torch

    state = torch.load(tmp_path / "saved" / "weights.pt", weights_only=False)
    del state["map_stats"]
    torch.save(state, tmp_path / "saved" / "weights.pt")
    with pytest.raises(ModelFileError, match="map statistics"):
        registry.get(key).load(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "detector.json").read_text())["config"][
        "score_mode"
    ] == (STANDARDIZED_MAX)
