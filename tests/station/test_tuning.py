"""The station's ``auto`` scoring settings (:mod:`inspection.station.tuning`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from inspection.station.tuning import HEAVY_BATCH, MAX_WORKERS, resolve_tuning
from tests.station.conftest import make_config


def _config(tmp_path: Path, weights_mb: float, **overrides: Any):  # type: ignore[no-untyped-def]
    cfg = make_config(tmp_path, **overrides)
    if weights_mb:
        assert cfg.detector.path is not None
        with (cfg.detector.path / "model.bin").open("wb") as f:  # sparse: no disk used
            f.truncate(int(weights_mb * 1e6))
    return cfg


def _auto(**pipeline: Any) -> dict[str, Any]:
    return {
        "pipeline": {
            "batch_size": "auto",
            "infer_workers": "auto",
            "requests_per_worker": "auto",
            **pipeline,
        }
    }


def test_config_defaults_are_auto() -> None:
    from inspection.station.config import DetectorSettings, PipelineConfig

    pipe = PipelineConfig()
    assert (pipe.batch_size, pipe.infer_workers, pipe.requests_per_worker) == ("auto",) * 3
    det = DetectorSettings(path=Path("b"))
    assert (det.performance_hint, det.inference_precision) == ("auto", "auto")


def test_weight_heavy_bundle_batches_on_one_compiled_model(tmp_path: Path) -> None:
    cfg = _config(tmp_path, 230, **_auto())
    t = resolve_tuning(cfg, cfg.detector.path, cores=2)
    assert (t.batch_size, t.infer_workers, t.performance_hint) == (HEAVY_BATCH, 1, "latency")
    assert t.requests_per_worker == 2 and "weight-heavy" in t.reason
    assert t.static_batch  # compiled for exactly that batch: weights repacked once


@pytest.mark.parametrize(("cores", "workers"), [(1, 2), (2, 3), (4, 5), (16, MAX_WORKERS)])
def test_compute_bound_bundle_uses_parallel_streams(
    tmp_path: Path, cores: int, workers: int
) -> None:
    cfg = _config(tmp_path, 3, **_auto())
    t = resolve_tuning(cfg, cfg.detector.path, cores=cores)
    assert (t.batch_size, t.infer_workers, t.performance_hint) == (1, workers, "throughput")
    assert not t.static_batch


def test_settings_in_the_config_are_kept_and_the_rest_fit_them(tmp_path: Path) -> None:
    cfg = _config(tmp_path, 3, **_auto(infer_workers=1))
    t = resolve_tuning(cfg, cfg.detector.path, cores=2)
    assert (t.infer_workers, t.performance_hint) == (1, "latency")
    cfg = _config(tmp_path, 3, **_auto(batch_size=8), detector={"performance_hint": "latency"})
    t = resolve_tuning(cfg, cfg.detector.path, cores=4)
    assert (t.batch_size, t.infer_workers, t.performance_hint) == (8, 1, "latency")
    cfg = _config(tmp_path, 300, **_auto(infer_workers=2))
    t = resolve_tuning(cfg, cfg.detector.path, cores=2)
    assert (t.batch_size, t.infer_workers, t.performance_hint) == (HEAVY_BATCH, 2, "throughput")
    cfg = _config(tmp_path, 3, **_auto(), detector={"num_threads": 1})
    assert resolve_tuning(cfg, cfg.detector.path, cores=2).performance_hint == "latency"


def test_station_reports_its_tuning(tmp_path: Path, db) -> None:  # type: ignore[no-untyped-def]
    from tests.station.conftest import make_station

    _, factory = db
    cfg = _config(tmp_path, 0, **_auto(), camera={"count": 6})
    station = make_station(cfg, factory)
    stats = station.run()
    assert stats["counters"]["persisted"] == 6
    tuning = stats["tuning"]
    assert tuning["batch_size"] == 1 and tuning["performance_hint"] == "throughput"
    assert len(station._scorers) == tuning["infer_workers"] >= 2


@pytest.mark.parametrize(("weights_mb", "frames_per_call"), [(230, HEAVY_BATCH), (3, 1)])
def test_station_compiles_for_a_fixed_batch(
    tmp_path: Path, db, weights_mb: float, frames_per_call: int
) -> None:  # type: ignore[no-untyped-def]
    """The loader is asked for exactly the tuned batch: a weight-heavy graph's 4 (padded, so
    OpenVINO repacks its weights once), a compute-bound graph's 1."""
    from tests.station.conftest import FakeLoader, make_station

    _, factory = db
    asked: list[int | None] = []
    fake = FakeLoader()

    def loader(bundle: Path, settings: Any, batch_size: int | None) -> Any:
        asked.append(batch_size)
        return fake(bundle, settings, batch_size)

    cfg = _config(tmp_path, weights_mb, **_auto(), camera={"count": 6})
    stats = make_station(cfg, factory, model_loader=loader).run()
    assert stats["counters"]["persisted"] == 6
    assert asked and set(asked) == {frames_per_call}
