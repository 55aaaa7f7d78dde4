"""``inference_precision: auto``: bf16 only where the export verified it and the CPU has it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inspection.runtime import OpenVinoModel, cpu_capabilities, resolve_precision
from tests.conftest import synthetic_set


def _meta(auto: str) -> dict[str, object]:
    return {"runtime_precision": {"auto": auto}}


def test_resolve_precision() -> None:
    assert resolve_precision("auto", _meta("bf16"), ["BF16", "FP32"]) == "bf16"
    assert resolve_precision("auto", _meta("bf16"), ["FP32"]) == "f32"  # no bf16 units here
    assert resolve_precision("auto", _meta("f32"), ["BF16"]) == "f32"  # flipped verdicts
    assert resolve_precision("auto", {}, ["BF16"]) == "f32"  # exported before the check
    assert resolve_precision("bf16", {}, []) == "bf16"  # asked for: as asked
    assert resolve_precision("f32", _meta("bf16"), ["BF16"]) == "f32"
    with pytest.raises(ValueError, match="fp64"):
        resolve_precision("fp64", {}, [])


@pytest.fixture(scope="module")
def trained():  # type: ignore[no-untyped-def]
    from inspection import training
    from inspection.detectors import registry

    cls = registry.get("padim")
    return training.train(cls(cls.quick_config()), synthetic_set(64, 40, 0, seed=1))


def test_export_records_the_check(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from inspection import training

    assert trained.holdout is not None and trained.holdout.shape[1:] == (64, 64, 3)
    bundle = training.export_openvino(trained, tmp_path / "b")
    rec = json.loads((bundle / "model.json").read_text())["runtime_precision"]
    n = len(trained.holdout)
    assert (rec["n_normal"], rec["n_images"]) == (n, 3 * n)
    bf16 = rec["candidates"]["bf16"]
    if "BF16" in cpu_capabilities():
        assert bf16["verified"] and 0 <= bf16["flip_rate"] <= 1
        assert bf16["flips"] == round(bf16["flip_rate"] * rec["n_images"])
        assert bf16["ok"] == (bf16["flip_rate"] <= rec["max_flip_rate"] == 0.005)
        assert rec["auto"] == ("bf16" if bf16["ok"] else "f32")
    else:  # a check on a CPU without the units would compare f32 with f32
        assert not bf16["verified"] and rec["auto"] == "f32"
    model = OpenVinoModel(bundle, inference_precision="auto")
    assert model.precision == resolve_precision("auto", model.meta, cpu_capabilities())
    compiled = model.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    assert compiled == model.precision  # "f32" / "bf16"


def test_no_holdout_means_f32(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from inspection.training import TrainedModel, export_openvino

    bare = TrainedModel(trained.detector, trained.calibration, 0.0, 1, 1)
    rec = json.loads((export_openvino(bare, tmp_path / "b") / "model.json").read_text())
    assert rec["runtime_precision"]["auto"] == "f32"
    assert rec["runtime_precision"]["candidates"]["bf16"]["verified"] is False


def test_verdict_flips_are_counted(tmp_path: Path, trained) -> None:  # type: ignore[no-untyped-def]
    """A threshold that sits on a score makes bf16's small shifts flip verdicts."""
    from inspection import training
    from inspection.precision import check_images, check_runtime_precision

    if "BF16" not in cpu_capabilities():
        pytest.skip("this CPU has no bf16 units")
    bundle = training.export_openvino(trained, tmp_path / "b", check_precision=False)
    images, _ = check_images(trained.holdout)
    raw = OpenVinoModel(bundle, inference_precision="f32").infer_raw(images)[0]
    meta = json.loads((bundle / "model.json").read_text())
    # thresholds between neighbouring scores: any shift larger than the gaps flips some
    gaps = np.sort(raw)
    meta["calibration"]["image_threshold"] = float(np.median(gaps))
    (bundle / "model.json").write_text(json.dumps(meta))
    rec = check_runtime_precision(bundle, trained.holdout)
    bf16 = rec["candidates"]["bf16"]
    assert bf16["max_rel_score_shift"] > 0  # bf16 did run
    assert rec["auto"] == ("bf16" if bf16["flip_rate"] <= 0.005 else "f32")
