"""Mem-AE self-checks: memory addressing, tiny pixel and feature fits."""

from __future__ import annotations

import torch

from inspection.detectors.memae import MemoryModule, addressing_entropy, hard_shrink_relu
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
