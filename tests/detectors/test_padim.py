"""PaDiM's separable smoothing equals anomalib's 2-D Gaussian blur."""

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
