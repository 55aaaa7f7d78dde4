"""OC-GAN self-checks: bounded latent, tiny fit with negative mining."""

from __future__ import annotations

import pytest
import torch

from inspection.detectors import registry
from inspection.detectors.ocgan import OcganModel
from tests.detectors._tiny import check_output, fit_and_predict


def test_latent_is_bounded_and_decodes_to_image_shape() -> None:
    model = OcganModel(work_size=32, width=8, latent_channels=4, sigma=1.0).eval()
    z = model.encoder(torch.randn(2, 3, 32, 32) * 5)
    assert z.shape == (2, 4, 4, 4) and z.abs().max() < 1
    assert model.decoder(z).shape == (2, 3, 32, 32)


def test_tiny_fit_with_mining() -> None:
    _, out, labels = fit_and_predict("ocgan", mining_start=0.5)
    check_output(out, labels)


@pytest.mark.parametrize("key", ["ocgan", "ganomaly"])
def test_tanh_decoders_see_inputs_in_their_range(key: str) -> None:
    """Pixels outside [-1, 1] (photometric standardisation) are clamped before the autoencoder:
    the output equals that of the clamped input, and nothing unreachable enters the error."""
    cls = registry.get(key)
    det = cls(cls.quick_config())
    model = det.torch_model.eval()
    # constant over each 2 x 2 block, so the down-scaling to work size commutes with the clamp
    x = torch.repeat_interleave(torch.randn(2, 3, 32, 32) * 0.6, 2, -1).repeat_interleave(2, -2)
    assert (x.abs() > 1).any()
    with torch.no_grad():
        out, ref = model(x), model(x.clamp(-1, 1))
    torch.testing.assert_close(out.pred_score, ref.pred_score)
    torch.testing.assert_close(out.anomaly_map, ref.anomaly_map)
