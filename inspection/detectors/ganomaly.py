"""GANomaly (reference): anomalib's ``GanomalyModel`` with a plain training loop.

Akcay, Atapour-Abarghouei, Breckon, "GANomaly: Semi-Supervised Anomaly Detection via
Adversarial Training", ACCV 2018 (arXiv:1805.06725). The networks are anomalib's
(:class:`anomalib.models.image.ganomaly.torch_model.GanomalyModel`: encoder - decoder -
encoder generator plus a DCGAN discriminator); the loop mirrors anomalib's Lightning module
step for step: generator loss ``wadv`` x MSE(D(x), D(G(x))) + ``wcon`` x L1(x, G(x)) + ``wenc``
x SmoothL1(z, z'), then discriminator BCE on real / generated images (Adam, lr 2e-4, betas
(0.5, 0.999), anomalib defaults). Registered as the reference for the self-implemented
reconstruction methods (Mem-AE, OC-GAN).

anomalib's eval forward returns only ``pred_score`` (the latent distance mean((z - z')^2)),
no anomaly map. The exported model here keeps that score and adds a map: the per-pixel
absolute reconstruction error |x - G(x)| (mean over channels) at ``work_size``, bilinearly
upsampled to the input size and Gaussian-smoothed. The networks run at ``work_size`` px with
``n_features`` base channels (anomalib: input size, 64) to fit the CPU budget.

anomalib re-normalises scores with the min / max of each validation epoch; this project's
engine calibrates thresholds on held-out normal images instead, so raw scores are returned.
"""

from __future__ import annotations

from typing import Literal

import torch
from anomalib.data import InferenceBatch
from pydantic import Field
from torch import nn

from inspection.detectors._common import (
    GaussianBlur,
    tanh_range_input,
)
from inspection.detectors.base import Detector, ProgressFn, TrainedDetectorConfig, batches


class GanomalyConfig(TrainedDetectorConfig):
    """GANomaly settings (anomalib defaults unless noted)."""

    type: Literal["ganomaly"] = "ganomaly"
    work_size: int = Field(64, ge=16, description="Internal resolution, a power of two.")
    n_features: int = Field(16, ge=4, description="anomalib default 64; CPU budget.")
    latent_vec_size: int = Field(100, ge=1)
    extra_layers: int = Field(0, ge=0)
    wadv: float = 1.0
    wcon: float = 50.0
    wenc: float = 1.0
    lr: float = Field(2e-4, gt=0)
    epochs: int = Field(30, ge=1)
    smoothing_sigma: float = Field(4.0, ge=0)


class GanomalyWrapper(nn.Module):
    """anomalib ``GanomalyModel`` plus an exportable eval path with a reconstruction-error map.

    Eval forward: (N, 3, H, W) normalised -> InferenceBatch(pred_score (N,) anomalib's latent
    distance, anomaly_map (N, 1, H, W)).
    """

    def __init__(self, cfg: GanomalyConfig, sigma: float) -> None:
        super().__init__()
        from anomalib.models.image.ganomaly.torch_model import GanomalyModel

        size = cfg.work_size
        if size & (size - 1):
            raise ValueError(f"ganomaly: work_size must be a power of two, got {size}")
        self.work_size = size
        self.model = GanomalyModel(
            input_size=(size, size),
            num_input_channels=3,
            n_features=cfg.n_features,
            latent_vec_size=cfg.latent_vec_size,
            extra_layers=cfg.extra_layers,
            add_final_conv_layer=True,
        )
        self.blur = GaussianBlur(sigma)

    def forward(self, images: torch.Tensor) -> InferenceBatch:
        x = tanh_range_input(images, self.work_size)
        fake, latent_i, latent_o = self.model.generator(x)
        score = torch.mean(torch.pow(latent_i - latent_o, 2), dim=(1, 2, 3))
        err = torch.abs(x - fake).mean(dim=1, keepdim=True)
        amap = self.blur(err, images.shape[-2:])
        return InferenceBatch(pred_score=score, anomaly_map=amap)


class GanomalyDetector(Detector):
    """anomalib GANomaly as a reference detector."""

    key = "ganomaly"
    Config = GanomalyConfig
    paper = "Akcay et al., GANomaly, ACCV 2018, arXiv:1805.06725 (anomalib GanomalyModel)"
    #: torch vs OpenVINO fp32 (CPU): measured max deviation 3.0e-6 (score), 5.0e-7 (map) at quick_config,
    #: score relative / map relative to its range; the base's default tolerances keep a >30x
    #: margin.

    config: GanomalyConfig

    @classmethod
    def quick_config(cls) -> GanomalyConfig:
        return GanomalyConfig(image_size=64, work_size=32, n_features=16, epochs=40, batch_size=8)

    def build_model(self) -> nn.Module:
        cfg = self.config
        return GanomalyWrapper(cfg, cfg.smoothing_sigma * cfg.image_size / 256.0)

    def fit_model(self, images: torch.Tensor, progress: ProgressFn) -> None:
        from anomalib.models.image.ganomaly.loss import DiscriminatorLoss, GeneratorLoss

        cfg = self.config
        wrapper = self.torch_model
        assert isinstance(wrapper, GanomalyWrapper)
        model = wrapper.model
        with torch.no_grad():
            data = torch.cat(
                [tanh_range_input(images[sl], cfg.work_size) for sl in batches(len(images), 64)]
            )
        gen_loss = GeneratorLoss(cfg.wadv, cfg.wcon, cfg.wenc)
        disc_loss = DiscriminatorLoss()
        betas = (0.5, 0.999)
        opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=cfg.lr, betas=betas)
        opt_g = torch.optim.Adam(model.generator.parameters(), lr=cfg.lr, betas=betas)
        gen = torch.Generator().manual_seed(cfg.seed)
        n = len(data)
        for epoch in range(cfg.epochs):
            model.train()
            order = torch.randperm(n, generator=gen)
            g_sum = d_sum = 0.0
            for sl in batches(n, cfg.batch_size):
                batch = (
                    tanh_range_input(self.training_batch(images, order[sl]), cfg.work_size)
                    if self.augmenting
                    else data[order[sl]]
                )
                if len(batch) < 2:
                    continue
                # the steps of anomalib's Ganomaly.training_step, in order
                padded, fake, latent_i, latent_o = model(batch)
                pred_real, _ = model.discriminator(padded)
                pred_fake, _ = model.discriminator(fake)
                g_loss = gen_loss(latent_i, latent_o, padded, fake, pred_real, pred_fake)
                opt_g.zero_grad()
                g_loss.backward(retain_graph=True)
                opt_g.step()
                pred_fake, _ = model.discriminator(fake.detach())
                d_loss = disc_loss(pred_real, pred_fake)
                opt_d.zero_grad()
                d_loss.backward()
                opt_d.step()
                g_sum += float(g_loss.detach()) * len(batch)
                d_sum += float(d_loss.detach()) * len(batch)
            progress(
                f"ganomaly: epoch (g {g_sum / n:.4f}, d {d_sum / n:.4f})", epoch + 1, cfg.epochs
            )
        wrapper.eval()


DETECTOR = GanomalyDetector
