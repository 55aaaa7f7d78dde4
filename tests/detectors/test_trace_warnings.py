"""Export traces PaDiM, PatchCore and the shared map blur without torch's TracerWarning (fixed at the
source: shapes are read as constants through detectors._common.static_dims; MKD calls one
blur on maps of several sizes in one forward)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from inspection import training
from inspection.detectors import registry
from inspection.runtime import OpenVinoModel
from tests.conftest import synthetic_set


@pytest.mark.parametrize("key", ["padim", "patchcore", "cutpaste", "mkd"])
def test_export_traces_without_tracer_warnings(key: str, tmp_path: Path) -> None:
    cls = registry.get(key)
    train = synthetic_set(64, 24, 0, seed=1)
    trained = training.train(cls(cls.quick_config()), train)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundle = training.export_openvino(trained, tmp_path / "b", check_precision=False)
    tracer = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    assert not tracer, [f"{w.filename}:{w.lineno} {w.message}" for w in tracer]
    # and the traced graph still matches the torch model
    images = synthetic_set(64, 4, 4, seed=2).images
    ours = OpenVinoModel(bundle).predict(images)
    theirs = trained.detector.predict(images)
    np.testing.assert_allclose(ours.raw_score, theirs.score, rtol=1e-3, atol=1e-4)
    assert ours.anomaly_map.shape == (8, 64, 64)
