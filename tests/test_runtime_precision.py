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
    assert rec["weights"] == rec["runtime_precision"]["weights"] == "f32"


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


@pytest.fixture(scope="module")
def unseen() -> np.ndarray:
    """Good parts the model has not seen: no normal sits on the threshold by construction."""
    return synthetic_set(64, 24, 0, seed=7).images


def _threshold_in_a_gap(trained, images: np.ndarray):  # type: ignore[no-untyped-def]
    """``trained`` with its image threshold in the widest gap between the check images' scores:
    no verdict sits on the threshold, so only a real loss of precision flips one."""
    import dataclasses

    from inspection.precision import check_images

    checked, _ = check_images(images, seed=trained.detector.config.seed)
    scores = np.sort(trained.detector.predict(checked).score)
    i = int(np.argmax(np.diff(scores)))
    cal = dataclasses.replace(trained.calibration, image_threshold=float(scores[i : i + 2].mean()))
    return dataclasses.replace(trained, calibration=cal)


def test_checked_bundle_keeps_fp16_weights_within_the_recorded_shift(  # type: ignore[no-untyped-def]
    trained, unseen: np.ndarray, tmp_path: Path
) -> None:
    """bf16 verified: the bundle stores fp16 weights, and the file a station loads (checked
    again after compression) scores within what ``model.json`` records against f32 weights."""
    from inspection import training
    from inspection.precision import check_images

    if "BF16" not in cpu_capabilities():
        pytest.skip("this CPU has no bf16 units: nothing is verified, weights stay f32")
    trained = _threshold_in_a_gap(trained, unseen)
    bundle = training.export_openvino(trained, tmp_path / "b", holdout=unseen)
    meta = json.loads((bundle / "model.json").read_text())
    rec = meta["runtime_precision"]
    assert rec["auto"] == "bf16" and meta["weights"] == rec["weights"] == "fp16", rec
    assert set(rec["candidates"]) == {"f32", "bf16"}
    assert rec["f32_weights"]["bf16"]["ok"]  # the first check, on f32 weights
    plain = training.export_openvino(
        trained, tmp_path / "f32", holdout=unseen, check_precision=False
    )
    assert json.loads((plain / "model.json").read_text())["weights"] == "f32"
    assert (bundle / "model.bin").stat().st_size < 0.6 * (plain / "model.bin").stat().st_size
    assert not (bundle / ".fp16-weights").exists()

    images, _ = check_images(unseen, seed=trained.detector.config.seed)
    ref_model = OpenVinoModel(plain, inference_precision="f32")
    ref = np.concatenate(
        [ref_model.infer_raw(images[i : i + 8])[0] for i in range(0, len(images), 8)]
    )
    threshold = ref_model.image_threshold
    scale = max(float(np.abs(ref).max()), abs(threshold), 1e-12)
    for name in ("f32", "bf16"):
        model = OpenVinoModel(bundle, inference_precision=name)
        raw = np.concatenate(
            [model.infer_raw(images[i : i + 8])[0] for i in range(0, len(images), 8)]
        )
        flips = int(np.count_nonzero((raw > threshold) != (ref > threshold)))
        assert flips <= rec["max_flip_rate"] * len(images)
        shift = float(np.abs(raw - ref).max()) / scale
        assert shift <= rec["candidates"][name]["max_rel_score_shift"] * 1.01 + 1e-6, name
    assert OpenVinoModel(bundle, inference_precision="auto").precision == "bf16"


def test_failed_check_keeps_f32_weights(  # type: ignore[no-untyped-def]
    trained, unseen: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bundle whose check fails (here: a limit no precision meets) keeps f32 weights."""
    from inspection import precision, training

    monkeypatch.setattr(precision, "MAX_FLIP_RATE", -1.0)
    bundle = training.export_openvino(trained, tmp_path / "b", holdout=unseen)
    meta = json.loads((bundle / "model.json").read_text())
    assert meta["runtime_precision"]["auto"] == "f32"
    assert meta["weights"] == meta["runtime_precision"]["weights"] == "f32"
    assert "f32" not in meta["runtime_precision"]["candidates"]  # no fp16 file was tried
    plain = training.export_openvino(trained, tmp_path / "f32", check_precision=False)
    assert (bundle / "model.bin").stat().st_size == (plain / "model.bin").stat().st_size
    assert OpenVinoModel(bundle, inference_precision="auto").precision == "f32"
