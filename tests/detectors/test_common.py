"""Shared detector blocks: the fused resize-and-smooth equals resizing then smoothing."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from inspection.detectors._common import GaussianBlur, resize_to, upsample


@pytest.mark.parametrize("sigma", [0.0, 1.0, 4.0])
@pytest.mark.parametrize(
    ("src", "dst"),
    [((64, 64), (256, 256)), ((8, 8), (256, 256)), ((4, 4), (8, 8)), ((32, 48), (128, 192))],
)
def test_upsample_smooth_equals_upsample_then_blur(
    sigma: float, src: tuple[int, int], dst: tuple[int, int]
) -> None:
    blur = GaussianBlur(sigma)
    amap = torch.rand(3, 1, *src) * 5
    torch.testing.assert_close(
        blur.upsample_smooth(amap, dst), blur(upsample(amap, dst)), rtol=1e-5, atol=1e-5
    )


def test_upsample_smooth_exports_to_openvino() -> None:
    """Traced with a dynamic batch, the matrices become constants and the graph stays exact."""
    import openvino as ov

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blur = GaussianBlur(4.0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.blur(x, (256, 256))

    head = Head().eval()
    x = torch.rand(2, 1, 64, 64)
    head(x)  # as the exporter does: the first call caches the matrices
    model = ov.convert_model(head, example_input=x, input=[(-1, 1, 64, 64)])
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert any(
        "blur" in op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == "MatMul"
    )
    for batch in (1, 3):
        xb = torch.rand(batch, 1, 64, 64)
        got = torch.from_numpy(compiled(xb.numpy())[0])
        torch.testing.assert_close(got, head(xb), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("side", "size"), [(256, 64), (64, 16), (96, 32)])
def test_resize_to_box_filter_equals_avg_pool(side: int, size: int) -> None:
    images = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    expected = F.avg_pool2d(images, kernel_size=side // size)
    torch.testing.assert_close(resize_to(images, size), expected, rtol=1e-5, atol=1e-6)
