"""INT8 export keeps the scoring heads in float and re-sets thresholds for the quantised graph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from inspection import training
from inspection.detectors import registry
from inspection.runtime import OpenVinoModel
from tests.conftest import synthetic_set


@pytest.mark.parametrize("key", ["padim", "cutpaste"])
def test_int8_bundle_still_ranks_defects(key: str, tmp_path: Path) -> None:
    cls = registry.get(key)
    train = synthetic_set(64, 32, 0, seed=1)
    test = synthetic_set(64, 12, 12, seed=2)
    trained = training.train(cls(cls.quick_config()), train)
    calib = synthetic_set(64, 16, 0, seed=5).images
    fp32 = OpenVinoModel(training.export_openvino(trained, tmp_path / "fp32"))
    bundle = training.export_openvino(trained, tmp_path / "int8", "int8", calib)
    int8 = OpenVinoModel(bundle)
    auroc32 = roc_auc_score(test.labels, fp32.predict(test.images).raw_score)
    auroc8 = roc_auc_score(test.labels, int8.predict(test.images).raw_score)
    assert auroc8 >= auroc32 - 0.1, (auroc32, auroc8)
    meta = json.loads((bundle / "model.json").read_text())
    assert meta["precision"] == "int8" and "int8" in meta["calibration_source"]
    # thresholds come from the int8 graph's own scores on the normal quantisation images
    calib_scores = int8.predict(calib).raw_score
    assert np.quantile(calib_scores, 0.5) <= meta["calibration"]["image_threshold"]
    assert (calib_scores <= meta["calibration"]["image_threshold"] + 1e-6).mean() >= 0.9


def test_int8_needs_normal_images(tmp_path: Path) -> None:
    cls = registry.get("padim")
    trained = training.train(cls(cls.quick_config()), synthetic_set(64, 16, 0, seed=1))
    with pytest.raises(ValueError, match="calibration_images"):
        training.export_openvino(trained, tmp_path / "b", "int8")
