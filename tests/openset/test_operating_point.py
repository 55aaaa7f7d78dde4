"""The unknown threshold as an operating point: set from training data, kept with the bundle,
moved by a station without retraining."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inspection.errors import ConfigError
from inspection.openset.config import TyperConfig
from inspection.openset.scoring import operating_threshold
from inspection.openset.typer_runtime import operating_point


def test_legacy_quantile_loads_as_known_accept_rate() -> None:
    cfg = TyperConfig.model_validate({"quantile": 0.9})
    assert cfg.known_accept_rate == 0.9
    assert "quantile" not in cfg.model_dump()
    assert TyperConfig().known_accept_rate == 0.95


def test_operating_threshold_accepts_the_asked_share() -> None:
    known = np.linspace(0.0, 1.0, 101)
    t = operating_threshold(known, 0.9)
    assert (known <= t).mean() == pytest.approx(0.9, abs=0.011)
    with pytest.raises(ConfigError):
        operating_threshold(known, 1.0)
    with pytest.raises(ConfigError):
        operating_threshold(np.array([]), 0.9)


def test_station_rate_moves_the_threshold_from_stored_scores() -> None:
    meta = {
        "threshold": 0.95,
        "calibration": {"known_accept_rate_target": 0.95, "known_accept_rate_oof": 0.95},
        "config": {},
    }
    known = np.linspace(0.0, 1.0, 201)
    assert operating_point(meta, known)["source"] == "bundle"
    point = operating_point(meta, known, known_accept_rate=0.8)
    assert point["source"] == "station" and point["threshold"] == pytest.approx(0.8)
    assert point["known_accept_rate_oof"] == pytest.approx(0.8, abs=0.01)
    with pytest.raises(ConfigError):
        operating_point(meta, None, known_accept_rate=0.8)


@pytest.mark.slow
def test_exported_bundle_keeps_and_moves_its_operating_point(
    tmp_path: Path, tiny_config: TyperConfig, extractor, features, known_train, test_crops
) -> None:  # type: ignore[no-untyped-def]
    from inspection.openset.classifier import OpenSetTyper
    from inspection.openset.config import KnnConfig
    from inspection.openset.typer_runtime import TypingRuntime

    cfg = tiny_config.model_copy(update={"method": KnnConfig(k=2), "known_accept_rate": 0.9})
    typer = OpenSetTyper(cfg, extractor).fit_features(features[0], known_train.types)
    assert typer.calibration is not None
    assert typer.calibration.known_accept_rate == pytest.approx(0.9, abs=0.05)
    bundle = typer.export(tmp_path / "bundle")
    runtime = TypingRuntime(bundle)
    assert runtime.threshold == typer.threshold
    assert runtime.operating_point["known_accept_rate_target"] == 0.9
    images = test_crops.images[:8]
    want = typer.predict(images)
    got = runtime.predict(images)
    assert [r.label for r in got] == [r.label for r in want]
    np.testing.assert_allclose(
        [r.unknown_score for r in got], [r.unknown_score for r in want], rtol=1e-3, atol=1e-5
    )
    strict = TypingRuntime(bundle, known_accept_rate=0.5)
    assert strict.threshold < runtime.threshold
    loaded = OpenSetTyper.load(typer.save(tmp_path / "saved"), extractor)
    assert loaded.calibration is not None and loaded.calibration.target == 0.9
    np.testing.assert_allclose(loaded.calibration.known_scores, typer.calibration.known_scores)


def test_loop_records_the_typer_operating_point() -> None:
    from types import SimpleNamespace

    from inspection.loop.retrain import typer_operating_point
    from inspection.openset.classifier import Calibration

    calib = Calibration(0.5, np.linspace(0, 1, 21), accuracy=0.9, folds=3, target=0.95)
    typer = SimpleNamespace(method="knn", classes=["a", "b"], calibration=calib)
    point = typer_operating_point(typer)
    assert point is not None and point["method"] == "knn" and point["classes"] == ["a", "b"]
    assert point["known_accept_rate_target"] == 0.95 and point["threshold"] == 0.5
    assert point["known_accept_rate_oof"] == pytest.approx(11 / 21)
    assert typer_operating_point(None) is None
