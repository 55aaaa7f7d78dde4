"""Refiner: learns from labelled defects, keeps the one-class guard, and the exported graph
computes exactly what the NumPy side computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from inspection.loop.refiner import (
    RefinedModel,
    RefinerInputs,
    RefinerParams,
    fit_refiner,
    map_stats,
)


class FakeDeployable(nn.Module):
    """Score = mean brightness, map = per-pixel brightness (N, 1, S, S)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        amap = x.mean(dim=1, keepdim=True)
        return amap.amax(dim=(1, 2, 3)), amap


class FakePooled(nn.Module):
    """Pooled features = per-channel mean and max (6 values)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


def _inputs(rng: np.random.Generator, n: int, shift: float) -> RefinerInputs:
    pooled = rng.normal(size=(n, 8)).astype(np.float32)
    pooled[:, 0] += 3 * shift
    score = rng.normal(1.0 + 0.3 * shift, 0.2, n).astype(np.float32)
    return RefinerInputs(score, score * 0.5, score * 0.9, pooled)


def test_fit_refiner_uses_the_labels() -> None:
    rng = np.random.default_rng(0)
    defects, normals = _inputs(rng, 30, 1.0), _inputs(rng, 40, 0.0)
    train = RefinerInputs.concat([defects, normals])
    labels = np.r_[np.ones(30), np.zeros(40)]
    params, oof = fit_refiner(train, labels, normals, components=3, guard_quantile=None)
    assert params.cv_auroc is not None
    assert params.cv_auroc > 0.95  # the pooled shift separates what the score alone cannot
    assert oof.shape == (70,)
    assert params.summary()["features"] == ["score", "map_mean", "map_top", "pc0", "pc1", "pc2"]


def test_guard_keeps_high_one_class_scores_anomalous() -> None:
    rng = np.random.default_rng(1)
    defects, normals = _inputs(rng, 20, 1.0), _inputs(rng, 30, 0.0)
    params, _ = fit_refiner(
        RefinerInputs.concat([defects, normals]),
        np.r_[np.ones(20), np.zeros(30)],
        normals,
        components=2,
        guard_quantile=0.99,
    )
    params.threshold = 0.0
    novel = _inputs(rng, 5, 0.0)  # looks normal to the regression...
    novel.score[:] = params.guard + 1.0  # ...but the one-class score is far out
    assert (params.score(novel) > params.threshold).all()


def test_graph_matches_numpy_and_roundtrips(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        score, amap = FakeDeployable()(x)
        pooled = FakePooled()(x)
    inputs = RefinerInputs.from_outputs(score.numpy(), amap.numpy(), pooled.numpy())
    labels = np.r_[np.ones(6), np.zeros(6)]
    params, _ = fit_refiner(inputs, labels, inputs.take(np.arange(6, 12)), components=2)
    params.threshold = 0.3
    graph = RefinedModel(FakeDeployable(), FakePooled(), params).eval()
    with torch.no_grad():
        z, out_map = graph(x)
    np.testing.assert_allclose(z.numpy(), params.score(inputs), rtol=1e-4, atol=1e-4)
    assert out_map.shape == (12, 1, 16, 16)
    params.save(tmp_path)
    again = RefinerParams.load(tmp_path)
    np.testing.assert_allclose(again.score(inputs), params.score(inputs))


def test_map_stats() -> None:
    maps = np.arange(200, dtype=np.float32).reshape(2, 1, 10, 10)
    mean, top = map_stats(maps)
    np.testing.assert_allclose(mean, [49.5, 149.5])
    np.testing.assert_allclose(top, [99.0, 199.0])


def test_load_missing_refiner(tmp_path: Path) -> None:
    from inspection.errors import ModelFileError

    with pytest.raises(ModelFileError):
        RefinerParams.load(tmp_path)
