"""Mem-AE self-checks: memory addressing, tiny pixel and feature fits."""

from __future__ import annotations

import torch

from inspection.detectors.memae import (
    MemAEConfig,
    MemAEFeatConfig,
    MemoryModule,
    addressing_entropy,
    hard_shrink_relu,
)
from tests.detectors._tiny import check_output, fit_and_predict


def test_hard_shrink_zeroes_small_weights_and_keeps_large() -> None:
    w = torch.tensor([0.001, 0.004, 0.5])
    out = hard_shrink_relu(w, 0.005)
    assert out[0] == 0 and out[1] == 0
    assert torch.isclose(out[2], torch.tensor(0.5), atol=1e-6)


def test_memory_read_is_a_convex_combination_of_items() -> None:
    # threshold below 1/N: the largest softmax weight always survives the shrinkage
    mem = MemoryModule(size=10, dim=4, shrink_threshold=0.05)
    z = torch.randn(2, 4, 3, 3)
    read, weights = mem(z)
    assert read.shape == z.shape and weights.shape == (18, 10)
    assert torch.allclose(weights.sum(1), torch.ones(18), atol=1e-5)
    assert (weights >= 0).all()
    assert addressing_entropy(weights) >= 0


def test_pixel_memae_tiny_fit() -> None:
    _, out, labels = fit_and_predict("memae")
    check_output(out, labels)


def test_feature_memae_tiny_fit() -> None:
    _, out, labels = fit_and_predict("memae_feat")
    check_output(out, labels)


def test_configs_read_bundles_written_before_the_shared_base() -> None:
    # model.json of a pixel bundle exported before MemoryAEConfig: work_size came right after
    # augment; the config is read by field name, so the position does not matter.
    old_pixel = {
        "type": "memae",
        "image_size": 64,
        "augment": "none",
        "work_size": 64,
        "widths": [16, 32, 32],
        "memory_size": 50,
        "shrink_threshold": None,
        "entropy_weight": 2e-4,
        "epochs": 40,
        "lr": 3e-3,
        "score_mode": "map_max_std",
        "smoothing_sigma": 4.0,
    }
    cfg = MemAEConfig.model_validate(old_pixel)
    assert cfg.work_size == 64 and cfg.widths == (16, 32, 32) and cfg.epochs == 40
    assert MemAEConfig.model_validate(cfg.model_dump(mode="json")) == cfg
    assert cfg.shrink() == 2.5 / 50 and cfg.map_sigma() == 1.0
    # each variant keeps its own defaults; the feature variant's field order is unchanged
    assert MemAEConfig().epochs == 50 and MemAEFeatConfig().epochs == 40
    assert MemAEFeatConfig().widths == (128, 64)
    assert list(MemAEFeatConfig.model_fields)[-8:] == [
        "widths",
        "memory_size",
        "shrink_threshold",
        "entropy_weight",
        "epochs",
        "lr",
        "score_mode",
        "smoothing_sigma",
    ]
