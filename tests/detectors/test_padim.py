"""PaDiM's separable smoothing equals anomalib's 2-D Gaussian blur, and its batched Gaussian fit
anomalib's loop over positions."""

from __future__ import annotations

import pytest
import torch
from anomalib.models.components.filters import GaussianBlur2d

from inspection.detectors.padim import SeparableBlur


@pytest.mark.parametrize("size", [64, 256])
def test_separable_blur_matches_anomalib(size: int) -> None:
    blur = GaussianBlur2d(kernel_size=(33, 33), sigma=(4, 4), channels=1)
    amap = torch.rand(2, 1, size, size) * 10
    torch.testing.assert_close(SeparableBlur(blur)(amap), blur(amap), rtol=1e-5, atol=1e-5)


def test_separable_blur_keeps_the_weight_key() -> None:
    blur = GaussianBlur2d(kernel_size=(33, 33), sigma=(4, 4), channels=1)
    assert list(SeparableBlur(blur).state_dict()) == list(blur.state_dict()) == ["kernel"]


@pytest.mark.parametrize(("side", "size"), [(64, 256), (16, 256), (20, 48)])
def test_fused_upsample_smooth_matches_anomalib(side: int, size: int) -> None:
    """anomalib's map: bilinear upsampling, then its 2-D blur; ours: two matrix products."""
    from torch.nn import functional as F

    blur = GaussianBlur2d(kernel_size=(33, 33), sigma=(4, 4), channels=1)
    amap = torch.rand(2, 1, side, side) * 10
    reference = blur(F.interpolate(amap, size=(size, size), mode="bilinear", align_corners=False))
    fused = SeparableBlur(blur).upsample_smooth(amap, (size, size))
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)


def test_batched_gaussian_fit_matches_anomalibs_loop() -> None:
    """:func:`fit_gaussians` computes anomalib's per-position Gaussians in one batched product."""
    from anomalib.models.components.stats.multi_variate_gaussian import MultiVariateGaussian

    from inspection.detectors.padim import fit_gaussians

    embedding = torch.randn(12, 6, 4, 5, generator=torch.Generator().manual_seed(0))
    mean, inv = fit_gaussians(embedding)
    ref_mean, ref_inv = MultiVariateGaussian().forward(embedding)
    assert mean.shape == (6, 20) and inv.shape == (20, 6, 6)
    torch.testing.assert_close(mean, ref_mean)
    torch.testing.assert_close(inv, ref_inv, rtol=1e-4, atol=1e-5)
