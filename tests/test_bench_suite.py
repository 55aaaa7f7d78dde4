"""``inspection bench suite``: results shape, merging, skipped data sets and the ``auto`` key.

One test runs a real cell (quick PaDiM, synthetic set) end to end in-process; ``auto`` runs with
a fake ``train_auto`` and a stubbed measurement; merging and skipping run with a stand-in cell;
the child-process runner is tested on cheap functions (``test_bench_quick`` spawns a real one).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from inspection.bench import measure, suite

TOP_KEYS = {"protocol", "commit", "date", "machine", "datasets", "summary"}
SUMMARY_KEYS = {"mean_image_auroc", "worst_image_auroc", "n_datasets"}


def _fake_cell(auroc: dict[tuple[str, str], float]) -> Any:
    """A stand-in for :func:`suite.bench_cell` returning fixed rows (no training)."""

    def cell(
        dataset: str,
        key: str,
        data_root: Path,
        quick: bool,
        figures_dir: Path | None,
        bundle_dir: Path | None = None,
        fit: str = "auto",
    ) -> dict[str, Any]:
        if (dataset, key) not in auroc:
            raise RuntimeError(f"no row for {dataset}/{key}")
        return {
            "image_auroc": auroc[(dataset, key)],
            "pixel_auroc": None,
            "aupro": None,
            "fit_seconds": 1.0,
            "openvino_ms_per_image": 2.0,
        }

    return cell


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_merge_keeps_rows_of_other_detectors_and_sets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {
        ("synthetic-disc", "padim"): 0.9,
        ("synthetic-tile", "padim"): 0.7,
        ("synthetic-disc", "stfpm"): 0.8,
    }
    monkeypatch.setattr(suite, "bench_cell", _fake_cell(values))
    suite.run(
        ["padim"],
        ["synthetic-disc", "synthetic-tile"],
        quick=True,
        results_dir=tmp_path,
        isolate=False,
    )
    first = _load(tmp_path / "suite-quick.json")
    old_row = first["datasets"]["synthetic-tile"]["detectors"]["padim"]
    values[("synthetic-disc", "padim")] = 0.95
    suite.run(
        ["stfpm", "padim"], ["synthetic-disc"], quick=True, results_dir=tmp_path, isolate=False
    )
    saved = _load(tmp_path / "suite-quick.json")
    assert set(saved) == TOP_KEYS
    disc = saved["datasets"]["synthetic-disc"]["detectors"]
    assert list(disc) == ["padim", "stfpm"]  # registry order
    assert disc["padim"]["image_auroc"] == 0.95  # re-measured
    assert saved["datasets"]["synthetic-tile"]["detectors"]["padim"] == old_row  # kept as is
    assert saved["summary"]["padim"] == {
        "mean_image_auroc": 0.825,
        "worst_image_auroc": 0.7,
        "n_datasets": 2,
    }
    assert saved["summary"]["stfpm"]["n_datasets"] == 1
    markdown = (tmp_path / "suite-quick.md").read_text()
    assert "`stfpm` has no row on `synthetic-tile`" in markdown


def test_failed_cell_is_reported_and_others_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(suite, "bench_cell", _fake_cell({("synthetic-disc", "padim"): 0.9}))
    result = suite.run(
        ["padim", "stfpm"], ["synthetic-disc"], quick=True, results_dir=tmp_path, isolate=False
    )
    assert list(result.failed) == ["synthetic-disc/stfpm"]
    saved = _load(tmp_path / "suite-quick.json")
    assert list(saved["datasets"]["synthetic-disc"]["detectors"]) == ["padim"]
    assert "synthetic-disc/stfpm" in (tmp_path / "suite-quick.md").read_text()


def test_absent_data_set_is_skipped_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(suite, "bench_cell", _fake_cell({("elpv_solar", "padim"): 0.6}))
    root = tmp_path / "data"
    results = tmp_path / "results"
    result = suite.run(["padim"], ["mt-exp"], root, results_dir=results, isolate=False)
    assert list(result.skipped) == ["mt-exp"] and "magnetic_tile" in result.skipped["mt-exp"]
    assert not (results / "suite.json").exists()
    (root / "elpv_solar").mkdir(parents=True)
    result = suite.run(["padim"], None, root, results_dir=results, isolate=False)
    assert set(result.skipped) == {"mt-exp", "mvtec_screw"}
    saved = _load(results / "suite.json")
    assert saved["protocol"] == "suite" and list(saved["datasets"]) == ["elpv_solar"]
    markdown = (results / "suite.md").read_text()
    assert "Not run in the last run" in markdown and "CC BY-NC-SA 4.0" in markdown


def test_cli_skips_absent_data_set(tmp_path: Path) -> None:
    from inspection.cli import app

    out = CliRunner().invoke(
        app,
        [
            "bench",
            "suite",
            "--data-root",
            str(tmp_path),
            "--datasets",
            "mvtec_screw",
            "--detectors",
            "padim",
            "--results-dir",
            str(tmp_path / "results"),
        ],
    )
    assert out.exit_code == 0, out.output
    assert "skipped mvtec_screw" in out.output


def test_cli_rejects_unknown_fit(tmp_path: Path) -> None:
    from inspection.cli import app

    out = CliRunner().invoke(
        app, ["bench", "suite", "--fit", "crop", "--results-dir", str(tmp_path)]
    )
    assert out.exit_code != 0 and "crop" in out.output
    assert not list(tmp_path.iterdir())  # nothing ran, nothing written


def test_load_dataset_gives_the_product_fit(tmp_path: Path) -> None:
    """Like ``inspection train --fit auto``: images far from square are letterboxed, unless a
    fit is forced."""
    import cv2

    for sub in ("train/good", "test/good", "test/dent"):
        (tmp_path / "part" / sub).mkdir(parents=True)
        image = np.full((40, 100), 128, np.uint8)
        cv2.imwrite(str(tmp_path / "part" / sub / "000.png"), image)
    spec = suite.DatasetSpec("part", "mvtec", "part", "")
    train, test = suite.load_dataset(spec, tmp_path, 32)
    assert train.fit == test.fit == "pad" and test.boxes is not None
    train, test = suite.load_dataset(spec, tmp_path, 32, "stretch")
    assert train.fit == test.fit == "stretch"


def test_quick_run_writes_exact_shape_markdown_and_picture(tmp_path: Path) -> None:
    bundles = tmp_path / "bundles"
    result = suite.run(
        ["padim"],
        ["synthetic-tile"],
        quick=True,
        results_dir=tmp_path,
        isolate=False,
        bundles_dir=bundles,
    )
    assert not result.failed, result.failed
    assert result.measured == [("synthetic-tile", "padim")]
    saved = _load(tmp_path / "suite-quick.json")
    assert set(saved) == TOP_KEYS and saved["protocol"] == suite.QUICK_PROTOCOL
    assert list(saved["datasets"]) == ["synthetic-tile"]
    assert set(saved["datasets"]["synthetic-tile"]) == {"detectors"}
    row = saved["datasets"]["synthetic-tile"]["detectors"]["padim"]
    for name in ("image_auroc", "pixel_auroc", "aupro", "fit_seconds", "openvino_ms_per_image"):
        assert isinstance(row[name], float | int), name
    assert row["commit"] and row["date"]
    # quick_config() runs at 64 px; its maps are resized to the 256 px masks for the metrics
    assert row["input_size"] == 64 and row["metric_size"] == suite.METRIC_SIZE == 256
    assert row["fit"] == "stretch"  # square synthetic parts: the product's choice is stretch
    assert saved["summary"] == {
        "padim": {
            "mean_image_auroc": round(row["image_auroc"], 4),
            "worst_image_auroc": round(row["image_auroc"], 4),
            "n_datasets": 1,
        }
    }
    markdown = (tmp_path / "suite-quick.md").read_text()
    assert "## synthetic-tile" in markdown and "## Summary" in markdown
    assert "(suite-quick/auroc.png)" in markdown
    assert (tmp_path / "suite-quick" / "auroc.png").stat().st_size > 0
    assert (tmp_path / "suite-quick" / "synthetic-tile" / "padim_curves.png").stat().st_size > 0
    assert isinstance(row["openvino_load_avg"], float)

    # --retime: the kept bundle is timed again; AUROC and the training stamp stay
    from inspection.bench.retime import retime_suite

    assert retime_suite(tmp_path, bundles, quick=True) == [("synthetic-tile", "padim")]
    again = _load(tmp_path / "suite-quick.json")["datasets"]["synthetic-tile"]["detectors"]
    assert again["padim"]["image_auroc"] == row["image_auroc"]
    assert again["padim"]["commit"] == row["commit"]
    timed = again["padim"]["openvino_timed"]
    assert set(timed) >= {"commit", "date", "machine", "load_avg_1m", "repeats"}
    assert again["padim"]["openvino_ms_per_image"] > 0
    assert "ov_retimed" in (tmp_path / "suite-quick.md").read_text()


def test_auto_loads_at_auto_size_and_records_chosen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fake ``train_auto`` "chooses" a 64 px detector; measuring is stubbed (no training)."""
    from inspection import training
    from inspection.data.imageset import ImageSet
    from inspection.evaluation import Calibration

    seen: dict[str, Any] = {}
    detector = SimpleNamespace(key="padim", config=SimpleNamespace(image_size=64))

    def fake_train_auto(normals: ImageSet, progress: Any = None, quick: bool = False) -> Any:
        seen["normals_side"] = normals.images.shape[1]
        selection = {"chosen": "padim", "candidates": {"padim": {"v": 0.5}, "stfpm": {"v": 0.4}}}
        return SimpleNamespace(detector=detector, auto_selection=selection)

    def fake_measure(trained: Any, test_set: ImageSet, eval_set: ImageSet, **_: Any) -> Any:
        seen["test_side"] = test_set.images.shape[1]
        seen["eval_side"] = eval_set.masks.shape[-1]
        assert trained.detector is detector and eval_set.ids == test_set.ids
        row = {
            "image_auroc": 0.75,
            "pixel_auroc": 0.5,
            "aupro": 0.25,
            "image_f1": 0.5,
            "fit_seconds": 1.0,
            "openvino_ms_per_image": 2.0,
        }
        cal = Calibration(0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.99)
        return measure.Measurement(row, np.zeros(len(test_set)), np.zeros(0), eval_set, cal)

    monkeypatch.setattr(training, "train_auto", fake_train_auto)
    monkeypatch.setattr(training, "QUICK_AUTO_LOAD_SIZE", 96)
    monkeypatch.setattr(measure, "measure_trained", fake_measure)
    assert suite.AUTO in suite.default_keys()
    result = suite.run(
        [suite.AUTO],
        ["synthetic-disc"],
        quick=True,
        results_dir=tmp_path,
        isolate=False,
        figures=False,
    )
    assert not result.failed, result.failed
    # normals at AUTO_LOAD_SIZE, test images at the chosen detector's side, metrics at 256 px
    assert seen == {"normals_side": 96, "test_side": 64, "eval_side": 256}
    saved = _load(tmp_path / "suite-quick.json")
    row = saved["datasets"]["synthetic-disc"]["detectors"]["auto"]
    assert row["chosen"] == "padim" and row["detector"] == "padim" and row["load_size"] == 96
    assert row["auto_selection"]["candidates"]["stfpm"] == {"v": 0.4}
    assert set(saved["summary"]["auto"]) == SUMMARY_KEYS
    markdown = (tmp_path / "suite-quick.md").read_text()
    assert "0.750 (padim)" in markdown  # the choice beside auto's AUROC in the summary
    assert "| detector | chosen |" in markdown  # and in the data set's table


def test_run_in_child_reports_result_error_and_death(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(measure, "_CHILD_POLL_S", 0.2)
    status, value = measure.run_in_child(suite.dataset_specs, (True,))
    assert status == "ok" and list(value) == list(suite.QUICK_DATASETS)
    bad = suite.DatasetSpec("x", "nope", "", "")
    status, value = measure.run_in_child(suite.load_dataset, (bad, Path("."), 64))
    assert status == "error" and "ValueError" in value and "nope" in value
    status, value = measure.run_in_child(os._exit, (3,))
    assert status == "error" and "exit code 3" in value
