"""Mixed precision: parts of a graph marked to stay f32 while the rest runs bf16."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inspection.ov_export import (
    drop_precision_marks,
    head_ops,
    keep_f32,
    precision_kept,
    stem_ops,
)
from inspection.runtime import OpenVinoModel, cpu_capabilities, put_constants_first
from tests.conftest import synthetic_set
from tests.test_runtime_precision import _threshold_in_a_gap

needs_bf16 = pytest.mark.skipif(
    "BF16" not in cpu_capabilities(), reason="this CPU has no bf16 units: OpenVINO runs f32"
)


def _tiny(size: int = 16) -> Any:
    """(N, 3, S, S) -> normalise -> conv (stride 2: S/2, the stem) -> conv (stride 2: S/4) ->
    1-channel smoothing conv -> flatten -> MatMul -> sum of squares (the head)."""
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)

    def conv(x: Any, cin: int, cout: int, stride: int, name: str) -> Any:
        w = ops.constant(rng.standard_normal((cout, cin, 3, 3)).astype(np.float32))
        node = ops.convolution(x, w, [stride, stride], [1, 1], [1, 1], [1, 1])
        node.set_friendly_name(name)
        return node

    x = ops.parameter([-1, 3, size, size], np.float32, name="x")
    norm = ops.subtract(x, ops.constant(np.float32(0.45)))
    norm.set_friendly_name("normalise")
    stem = conv(norm, 3, 8, 2, "stem_conv")
    body = conv(ops.relu(stem), 8, 8, 2, "body_conv")
    amap = ops.reduce_mean(ops.multiply(body, body), [1], True)
    smooth = conv(amap, 1, 1, 1, "smooth_conv")  # one channel: part of the head
    flat = ops.reshape(smooth, ops.constant(np.array([0, -1], np.int64)), True)
    weights = rng.standard_normal(((size // 4) ** 2, 32)).astype(np.float32)
    mm = ops.matmul(flat, ops.constant(weights), False, False)
    mm.set_friendly_name("head_matmul")
    score = ops.reduce_sum(ops.multiply(mm, mm), [1], False)
    score.set_friendly_name("score")
    return ov.Model([score], [x], "tiny")


def _names(ops: list[Any]) -> set[str]:
    return {op.get_friendly_name() for op in ops}


def test_parts_of_the_graph() -> None:
    model = _tiny()
    stem, head = _names(stem_ops(model)), _names(head_ops(model))
    assert {"normalise", "stem_conv"} <= stem and "body_conv" not in stem
    assert {"smooth_conv", "head_matmul", "score"} <= head
    assert not head & {"normalise", "stem_conv", "body_conv", "x"}
    with pytest.raises(ValueError, match="neck"):
        keep_f32(model, ("neck",))


def _saved(model: Any, tmp_path: Path) -> Any:
    import openvino as ov

    ov.save_model(model, tmp_path / "m.xml", compress_to_fp16=False)
    return ov.Core().read_model(tmp_path / "m.xml")


def _runtime_precision(model: Any) -> dict[str, str]:
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    out = {}
    for op in compiled.get_runtime_model().get_ops():
        out[op.get_friendly_name()] = op.get_rt_info()["runtimePrecision"].astype(str)
    return out


@needs_bf16
def test_marked_nodes_stay_f32_in_the_compiled_model(tmp_path: Path) -> None:
    """Under a bf16 hint the CPU plugin runs the marked head's MatMul in f32 once the marked
    graph is saved and read back; the unmarked backbone convolution stays bf16."""
    plain = _runtime_precision(_saved(_tiny(), tmp_path))
    assert plain["head_matmul"] == "bf16" and plain["body_conv"] == "bf16"

    model = _tiny()
    assert keep_f32(model, ("head",)) == len(head_ops(model))
    read = _saved(model, tmp_path)
    assert _names([op for op in read.get_ops() if precision_kept(op)]) == _names(head_ops(read))
    mixed = _runtime_precision(read)
    assert mixed["head_matmul"] == "f32" and mixed["body_conv"] == "bf16"

    assert drop_precision_marks(read) == len(head_ops(read))
    assert _runtime_precision(read)["head_matmul"] == "bf16"


@needs_bf16
def test_marks_survive_put_constants_first(tmp_path: Path) -> None:
    """The station's MatMul rewrite keeps a marked MatMul f32."""
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([-1, 64, 32], np.float32, name="x")
    w = np.random.default_rng(0).standard_normal((64, 32, 16)).astype(np.float32)
    mm = ops.matmul(x, ops.constant(w), False, False)
    mm.set_friendly_name("mm")
    mm.get_rt_info()["precise_0"] = ""
    read = _saved(ov.Model([mm], [x], "m"), tmp_path)
    assert put_constants_first(read, min_mb=0.0) == 1
    assert _runtime_precision(read)["mm"] == "f32"


@pytest.fixture(scope="module")
def trained():  # type: ignore[no-untyped-def]
    from inspection import training
    from inspection.detectors import registry

    cls = registry.get("padim")
    return training.train(cls(cls.quick_config()), synthetic_set(64, 40, 0, seed=1))


@needs_bf16
def test_export_keeps_a_mixed_graph_that_passes(  # type: ignore[no-untyped-def]
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain bf16 made to fail, the stem kept f32 passing: the bundle holds the marked graph,
    records what stays f32 and both checks, and compiles with the stem in f32."""
    from inspection import precision, training

    real = precision._compare

    def plain_fails(bundle: Path, name: str, ref: Any, limit: float) -> dict[str, Any]:
        out = real(bundle, name, ref, limit)
        if name == "bf16" and bundle.name != ".mixed":
            out["ok"] = False  # only the plain graph's first check
        return out

    monkeypatch.setattr(precision, "_compare", plain_fails)
    monkeypatch.setattr(precision, "_try_fp16_weights", lambda *a: None)
    unseen = synthetic_set(64, 24, 0, seed=7).images
    trained = _threshold_in_a_gap(trained, unseen)
    bundle = training.export_openvino(trained, tmp_path / "b", holdout=unseen)
    rec = json.loads((bundle / "model.json").read_text())["runtime_precision"]
    assert rec["auto"] == "bf16", json.dumps(
        {k: v for k, v in rec.items() if k != "cpu_capabilities"}
    )
    assert rec["f32_parts"] == ["stem"] and rec["f32_ops"] > 0
    assert not rec["plain_bf16"]["ok"] and rec["candidates"]["bf16"]["ok"]
    assert [t["f32_parts"] for t in rec["mixed_trials"]] == [["stem"]]
    assert "DisablePrecisionConversion" in (bundle / "model.xml").read_text()
    assert not (bundle / ".mixed").exists()
    model = OpenVinoModel(bundle, inference_precision="auto")
    assert model.precision == "bf16"
    kinds: dict[str, set[str]] = {}
    for op in model.compiled.get_runtime_model().get_ops():
        rt = op.get_rt_info()
        if rt["layerType"].astype(str) == "Convolution":
            kinds.setdefault(rt["runtimePrecision"].astype(str), set()).add(op.get_friendly_name())
    assert kinds.get("f32") and kinds.get("bf16"), kinds  # stem f32, the rest bf16


def test_failed_mixed_trials_leave_the_bundle_plain(  # type: ignore[no-untyped-def]
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inspection import precision, training

    monkeypatch.setattr(precision, "MAX_FLIP_RATE", -1.0)
    bundle = training.export_openvino(trained, tmp_path / "b")
    rec = json.loads((bundle / "model.json").read_text())["runtime_precision"]
    assert rec["auto"] == "f32" and "f32_parts" not in rec
    if "BF16" in cpu_capabilities():
        trials = rec["mixed_trials"]
        assert [t["f32_parts"] for t in trials] == [list(p) for p in precision.MIXED]
        assert not any(t["bf16"]["ok"] for t in trials)
    assert "DisablePrecisionConversion" not in (bundle / "model.xml").read_text()
    assert not (bundle / ".mixed").exists()
