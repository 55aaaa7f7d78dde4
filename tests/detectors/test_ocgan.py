"""OC-GAN self-checks: bounded latent, tiny fit with negative mining."""

from __future__ import annotations

import torch

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
