"""The contract every registered detector passes (parametrised over the registry).

Tiny synthetic data (64 px): output shapes and dtypes, determinism, save/load round trip,
defective images scoring above normal ones, and torch vs OpenVINO parity of the exported IR.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inspection import training
from inspection.detectors import registry
from inspection.detectors.base import Detector
from inspection.errors import ModelFileError, NotFittedError
from inspection.runtime import OpenVinoModel
from tests.conftest import synthetic_set

KEYS = registry.keys()


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    train = synthetic_set(64, 24, 0, seed=1)
    test = synthetic_set(64, 8, 8, seed=2)
    return train.images, test.images, test.labels


def _fit(key: str, images: np.ndarray) -> Detector:
    cls = registry.get(key)
    det = cls(cls.quick_config())
    det.fit(images)
    return det


@pytest.fixture(scope="module")
def fitted(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[str, Detector]:
    return {}


def _get(fitted: dict[str, Detector], key: str, images: np.ndarray) -> Detector:
    if key not in fitted:
        fitted[key] = _fit(key, images)
    return fitted[key]


@pytest.mark.parametrize("key", KEYS)
def test_registry_key_and_paper(key: str) -> None:
    cls = registry.get(key)
    assert cls.key == key
    assert cls.paper, "every detector cites its paper"
    assert cls.quick_config().type == key
    assert registry.parse_config({"type": key}).type == key


@pytest.mark.parametrize("key", KEYS)
def test_predict_shapes_and_ranking(key: str, data: tuple, fitted: dict) -> None:
    train, test, labels = data
    det = _get(fitted, key, train)
    out = det.predict(test)
    assert out.score.shape == (len(test),) and out.score.dtype == np.float32
    assert out.anomaly_map.shape == (len(test), 1, 64, 64) and out.anomaly_map.dtype == np.float32
    assert np.isfinite(out.score).all() and np.isfinite(out.anomaly_map).all()
    assert out.score[labels == 1].mean() > out.score[labels == 0].mean()


@pytest.mark.parametrize("key", KEYS)
def test_deterministic_and_save_load(key: str, data: tuple, fitted: dict, tmp_path: Path) -> None:
    train, test, _ = data
    det = _get(fitted, key, train)
    first = det.predict(test)
    again = det.predict(test)
    np.testing.assert_array_equal(first.score, again.score)
    det.save(tmp_path / key)
    loaded = registry.get(key).load(tmp_path / key)
    np.testing.assert_allclose(loaded.predict(test).score, first.score, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("key", KEYS)
def test_openvino_parity(key: str, data: tuple, fitted: dict, tmp_path: Path) -> None:
    train, test, _ = data
    det = _get(fitted, key, train)
    trained = training.TrainedModel(
        det, training.calibrate(*det.predict(train[:8])), 0.0, len(train), 8
    )
    training.export_openvino(trained, tmp_path / "bundle")
    ov_model = OpenVinoModel(tmp_path / "bundle")
    ref = det.predict(test)
    pred = ov_model.predict(test)
    scale = float(np.ptp(ref.anomaly_map)) or 1.0
    cls = registry.get(key)
    np.testing.assert_allclose(
        pred.raw_score, ref.score, rtol=cls.export_rtol, atol=cls.export_atol * scale
    )
    np.testing.assert_allclose(
        pred.anomaly_map, ref.anomaly_map[:, 0], rtol=cls.export_rtol, atol=cls.export_atol * scale
    )


def test_unfitted_and_mismatched_files(tmp_path: Path) -> None:
    det = registry.get("padim")(registry.get("padim").quick_config())
    with pytest.raises(NotFittedError):
        det.predict(np.zeros((1, 64, 64, 3), np.uint8))
    with pytest.raises(ModelFileError):
        registry.get("stfpm").load(tmp_path)
    with pytest.raises(ModelFileError):
        OpenVinoModel(tmp_path)
