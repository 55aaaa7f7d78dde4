"""Patch refiner on a 64 px PaDiM: learns defect patches, and the exported OpenVINO graph
computes what the NumPy/torch training side computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inspection.detectors import registry
from inspection.loop.patch_refiner import (
    PatchRefinedPadim,
    PatchRefinerParams,
    fit_patch_refiner,
    one_class_scores,
    padim_maps,
    refined_maps,
)
from tests.conftest import synthetic_set


@pytest.fixture(scope="module")
def fitted():  # type: ignore[no-untyped-def]
    cls = registry.get("padim")
    detector = cls(cls.quick_config())
    train = synthetic_set(64, 24, 0, seed=11)
    detector.fit(train.images)
    labelled = synthetic_set(64, 8, 12, seed=12)
    test = synthetic_set(64, 8, 8, seed=13)
    return detector, labelled, test


def test_maps_match_the_detector(fitted) -> None:  # type: ignore[no-untyped-def]
    detector, _, test = fitted
    maps = padim_maps(detector, test.images)  # OpenVINO backbone
    assert maps.emb.shape == (16, 120, 16, 16)
    reference = detector.predict(test.images).score
    np.testing.assert_allclose(one_class_scores(detector, maps, 64), reference, rtol=1e-3)
    torch_maps = padim_maps(detector, test.images, backend="torch")
    np.testing.assert_allclose(one_class_scores(detector, torch_maps, 64), reference, rtol=1e-4)
    np.testing.assert_allclose(maps.emb, torch_maps.emb, rtol=1e-3, atol=1e-3)


def test_refiner_learns_and_exports(fitted, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import openvino as ov
    import torch

    from inspection.loop.gate import auroc

    detector, labelled, test = fitted
    maps = padim_maps(detector, labelled.images)
    y = labelled.labels
    params = fit_patch_refiner(
        maps.take(np.flatnonzero(y == 1)), maps.take(np.flatnonzero(y == 0)), top_k=4
    )
    assert params.n_defect_patches == 12 * 4
    assert params.n_normal_patches == 8 * 16 * 16
    test_maps = padim_maps(detector, test.images)
    scores, amap = refined_maps(detector, params, test_maps, 64)
    assert amap.shape == (16, 1, 64, 64)
    assert (auroc(scores, test.labels) or 0) >= 0.8
    params.threshold = float(np.median(scores))
    graph = PatchRefinedPadim(detector, params).eval()
    x = torch.from_numpy(test.images).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        g_score, _ = graph(x)
    np.testing.assert_allclose(g_score.numpy(), scores, rtol=1e-3, atol=1e-3)
    ov_model = ov.convert_model(graph, example_input=x[:1])
    ov_model.reshape({0: ov.PartialShape([-1, 3, 64, 64])})
    compiled = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    out = compiled(x.numpy())
    np.testing.assert_allclose(np.asarray(out[0]).reshape(-1), scores, rtol=1e-3, atol=1e-3)
    params.save(tmp_path)
    again = PatchRefinerParams.load(tmp_path)
    np.testing.assert_allclose(again.logit_maps(test_maps), params.logit_maps(test_maps))


def test_guard_raises_far_out_one_class_scores(fitted) -> None:  # type: ignore[no-untyped-def]
    detector, labelled, _ = fitted
    maps = padim_maps(detector, labelled.images)
    y = labelled.labels
    params = fit_patch_refiner(maps.take(np.flatnonzero(y == 1)), maps.take(np.flatnonzero(y == 0)))
    params.threshold = 100.0  # nothing passes on its refined score alone...
    params.guard = 0.0  # ...but every one-class score is above a guard of 0
    scores, _ = refined_maps(detector, params, maps, 64)
    assert (scores > 100.0).all()
