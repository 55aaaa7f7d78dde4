"""Deep k-NN scorer (Sun et al., ICML 2022) and multi-level pooled features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inspection.openset.config import FeatureConfig, KnnConfig
from inspection.openset.methods import fit_knn
from inspection.openset.scoring import NetworkOutputs, knn_distance, score


def _outputs(rng: np.random.Generator, n: int = 50, d: int = 12) -> NetworkOutputs:
    feats = rng.normal(size=(n, d)).astype(np.float32)
    return NetworkOutputs(feats, feats[:, :3].copy(), rng.normal(size=(n, 3)).astype(np.float32))


def test_knn_distance_is_the_kth_nearest_normalised_neighbour(rng: np.random.Generator) -> None:
    train = _outputs(rng)
    state = fit_knn(KnnConfig(k=3, standardise=True), train)
    query = rng.normal(size=(7, 12))
    z = (query - train.features.mean(0)) * state.arrays["scale"]
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    bank = (train.features - train.features.mean(0)) * state.arrays["scale"]
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    brute = np.sort(np.linalg.norm(z[:, None] - bank[None], axis=2), axis=1)[:, 2]
    np.testing.assert_allclose(knn_distance(query, state.arrays, 3), brute, atol=1e-5)


def test_knn_scores_far_points_higher_and_caps_the_bank(rng: np.random.Generator) -> None:
    train = _outputs(rng, n=200)
    state = fit_knn(KnnConfig(k=2, max_bank=64), train)
    assert state.arrays["bank"].shape == (64, 12)
    far = train.features[:5] * 0 + 50.0 * rng.normal(size=(5, 12)).astype(np.float32)
    near = train.features[:5]
    both = NetworkOutputs(
        np.concatenate([near, far]),
        np.zeros((10, 3), np.float32),
        np.zeros((10, 3), np.float32),
    )
    s = score(state, both)
    assert s.unknown.shape == (10,) and np.all(s.unknown >= 0)
    emb_state = fit_knn(KnnConfig(space="embedding", k=1), train)
    assert emb_state.arrays["bank"].shape[1] == 3
    assert score(emb_state, train).unknown.max() < 1e-3  # every training point is its own NN


def test_multi_level_pooling_keeps_the_head_features() -> None:
    from inspection.openset.features import PooledBackbone

    head_only = PooledBackbone(FeatureConfig(levels=("head",)), pretrained=False)
    multi = PooledBackbone(FeatureConfig(levels=("blocks.4", "head")), pretrained=False)
    multi.load_state_dict(head_only.state_dict())
    assert head_only.out_dim == 2560 and multi.out_dim == 2 * (112 + 1280)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a, b = head_only(x), multi(x)
    assert b.shape == (2, multi.out_dim)
    torch.testing.assert_close(b[:, -2560:], a)


@pytest.mark.parametrize("levels", [(), ("blocks.9",)])
def test_bad_levels_are_rejected(levels: tuple[str, ...]) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        FeatureConfig(levels=levels)  # type: ignore[arg-type]
