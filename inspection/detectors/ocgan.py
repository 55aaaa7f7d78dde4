"""OC-GAN: one-class novelty detection with a constrained, fully "normal" latent space.

Perera, Nallapati, Xiang, "OCGAN: One-class Novelty Detection Using GANs with Constrained
Latent Representations", CVPR 2019 (arXiv:1903.08550); official MXNet code PramuPerera/OCGAN.

Components (paper Sec. 3, official ``trainadnov``):

* **Denoising autoencoder** ``En`` / ``De``: the encoder sees the image plus Gaussian noise
  (official: variance 0.02) and ends in ``tanh``, so the latent (``latent_channels`` x 4 x 4)
  is bounded to (-1, 1); the decoder ends in ``tanh`` (inputs are normalised to [-1, 1] by the
  default mean = std = 0.5, and clamped there at the working resolution, since photometric
  standardisation can leave a few pixels outside: :func:`~inspection.detectors._common.tanh_range_input`).
* **Latent discriminator** ``Dl`` (MLP): separates encoded latents from samples of U(-1, 1),
  forcing the latent distribution of normal images to fill the whole box.
* **Visual discriminator** ``Dv``: separates real images from images decoded from random
  latents u ~ U(-1, 1), so that *every* latent decodes to a normal-looking image.
* **Classifier** ``C``: separates reconstructions of real images (positive) from images decoded
  from random latents (negative).
* **Informative negative mining**: latent samples are moved by gradient descent on
  ``BCE(C(De(tanh(mu))), negative)`` (``mining_steps`` steps, paper: 5) to regions the
  classifier finds least normal; the decoder is then trained (through ``Dv``) to make images
  decoded there look normal. As in the official code, mining starts after ``mining_start``
  of the epochs (official: epoch 150 of 201).
* **Generator loss** (official weights): ``rec_weight`` x 0.5 MSE(De(En(x + n)), x) +
  ``latent_adv_weight`` x BCE(Dl(En(x)), real) + BCE(Dv(De(l_mined)), real). Adam, lr 2e-4,
  beta1 0.5. Networks are DCGAN-style (4x4 stride-2 convolutions) at ``work_size`` px
  (paper: 28-64 px images; 64 here, a CPU-budget choice); the input is resized inside the
  graph and the map upsampled back.

Score: reconstruction MSE of the clean input (paper Sec. 3.6; ``score_mode="mean"``), or the
maximum of the smoothed map (``"map_max"``: a small defect is not averaged away), or that
maximum after standardising each position by the normal training images' maps
(``"map_max_std"``: edges every part reconstructs badly stop hiding defects; not in the
paper; :class:`~inspection.detectors.base.PositionStats`, in the exported graph); ``"auto"``
(default) lets the engine choose on synthetic defects painted onto held-out normal images
(:mod:`inspection.validation`), never on real defects. Map: per-pixel squared error (mean over
channels), bilinearly upsampled to the input size and Gaussian-smoothed.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from anomalib.data import InferenceBatch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from inspection.detectors._common import (
    GaussianBlur,
    tanh_range_input,
)
from inspection.detectors.base import (
    RECONSTRUCTION_SCORE_MODES,
    Detector,
    ProgressFn,
    TrainedDetectorConfig,
    batches,
)

_LATENT_SIDE = 4


class OcganConfig(TrainedDetectorConfig):
    """OC-GAN settings (official code defaults unless noted)."""

    type: Literal["ocgan"] = "ocgan"
    work_size: int = Field(64, ge=16, description="Internal resolution, a power of two.")
    base_width: int = Field(
        16, ge=4, description="Channels of the first conv (doubling per stage)."
    )
    latent_channels: int = Field(16, ge=1, description="Latent is latent_channels x 4 x 4.")
    noise_std: float = Field(
        math.sqrt(0.02), ge=0, description="Denoising noise (official var 0.02)."
    )
    rec_weight: float = Field(500.0, ge=0)
    latent_adv_weight: float = Field(10.0, ge=0)
    mining_steps: int = Field(5, ge=0)
    mining_lr: float = Field(2.0, gt=0)
    mining_start: float = Field(0.75, ge=0, le=1, description="Fraction of epochs before mining.")
    epochs: int = Field(30, ge=1)
    lr: float = Field(2e-4, gt=0)
    smoothing_sigma: float = Field(4.0, ge=0)
    score_mode: Literal["mean", "map_max", "map_max_std", "auto"] = Field(
        "auto",
        description="Image score: the paper's mean reconstruction error, the maximum of the "
        "smoothed map, its maximum standardised per position by the normal training maps, or "
        "chosen at training on synthetic defects (label-free).",
    )


def _check_size(work_size: int) -> int:
    stages = round(math.log2(work_size / _LATENT_SIDE))
    if work_size != _LATENT_SIDE * 2**stages or stages < 2:
        raise ValueError(f"ocgan: work_size must be a power of two >= 16, got {work_size}")
    return stages


def _encoder_layers(stages: int, width: int, out: int) -> list[nn.Module]:
    """DCGAN encoder: 4x4 stride-2 convs (3 -> width -> 2 width ...), ``stages`` halvings."""
    layers: list[nn.Module] = [nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
    cin = width
    for _ in range(stages - 1):
        layers += [
            nn.Conv2d(cin, cin * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(cin * 2),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        cin *= 2
    layers.append(nn.Conv2d(cin, out, 3, 1, 1))
    return layers


class Encoder(nn.Sequential):
    """(N, 3, S, S) -> (N, latent_channels, 4, 4) in (-1, 1)."""

    def __init__(self, stages: int, width: int, latent_channels: int) -> None:
        super().__init__(*_encoder_layers(stages, width, latent_channels), nn.Tanh())


class Decoder(nn.Sequential):
    """(N, latent_channels, 4, 4) -> (N, 3, S, S) in (-1, 1)."""

    def __init__(self, stages: int, width: int, latent_channels: int) -> None:
        cin = width * 2 ** (stages - 1)
        layers: list[nn.Module] = [
            nn.Conv2d(latent_channels, cin, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True),
        ]
        for _ in range(stages - 1):
            layers += [
                nn.ConvTranspose2d(cin, cin // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(cin // 2),
                nn.ReLU(inplace=True),
            ]
            cin //= 2
        layers += [nn.ConvTranspose2d(cin, 3, 4, 2, 1), nn.Tanh()]
        super().__init__(*layers)


class ImageCritic(nn.Module):
    """DCGAN discriminator / classifier: (N, 3, S, S) -> (N,) logits."""

    def __init__(self, stages: int, width: int) -> None:
        super().__init__()
        self.features = nn.Sequential(*_encoder_layers(stages, width, width)[:-1])
        cin = width * 2 ** (stages - 1)
        self.head = nn.Conv2d(cin, 1, _LATENT_SIDE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).reshape(-1)


class LatentCritic(nn.Module):
    """MLP discriminator on flattened latents (official: 128-64-32 hidden units)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, 128), nn.ReLU(inplace=True), nn.Linear(128, 64), nn.ReLU(inplace=True),
            nn.Linear(64, 32), nn.ReLU(inplace=True), nn.Linear(32, 1),
        )  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.flatten(1)).reshape(-1)


class OcganModel(nn.Module):
    """Autoencoder (exported) + the three training-only critics (saved, not in the eval path)."""

    def __init__(
        self,
        work_size: int,
        width: int,
        latent_channels: int,
        sigma: float,
        score_mode: str = "mean",
    ) -> None:
        super().__init__()
        stages = _check_size(work_size)
        self.score_mode = score_mode
        self.work_size = work_size
        self.encoder = Encoder(stages, width, latent_channels)
        self.decoder = Decoder(stages, width, latent_channels)
        self.visual_critic = ImageCritic(stages, width)
        self.classifier = ImageCritic(stages, width)
        self.latent_critic = LatentCritic(latent_channels * _LATENT_SIDE**2)
        self.latent_shape = (latent_channels, _LATENT_SIDE, _LATENT_SIDE)
        self.blur = GaussianBlur(sigma)
        for m in self.modules():  # DCGAN initialisation, as the official code
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor) -> InferenceBatch:
        x = tanh_range_input(images, self.work_size)
        recon = self.decoder(self.encoder(x))
        err = ((recon - x) ** 2).mean(dim=1, keepdim=True)
        amap = self.blur(err, images.shape[-2:])
        score = err.mean(dim=(1, 2, 3)) if self.score_mode == "mean" else amap.amax(dim=(1, 2, 3))
        return InferenceBatch(pred_score=score, anomaly_map=amap)


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class OcganDetector(Detector):
    """OC-GAN with informative negative mining; reconstruction-error score and map."""

    key = "ocgan"
    Config = OcganConfig
    paper = "Perera et al., OCGAN, CVPR 2019, arXiv:1903.08550"
    #: torch vs OpenVINO fp32 (CPU): measured max deviation 4.0e-7 (score), 3.2e-7 (map) at quick_config,
    #: score relative / map relative to its range; the base's default tolerances keep a >30x
    #: margin.
    score_modes: ClassVar[tuple[str, ...]] = RECONSTRUCTION_SCORE_MODES

    config: OcganConfig

    @classmethod
    def quick_config(cls) -> OcganConfig:
        return OcganConfig(
            image_size=64, work_size=32, base_width=16, epochs=20, batch_size=8, mining_start=0.5
        )

    def build_model(self) -> nn.Module:
        cfg = self.config
        sigma = cfg.smoothing_sigma * cfg.image_size / 256.0
        return OcganModel(
            cfg.work_size, cfg.base_width, cfg.latent_channels, sigma, self.built_score_mode()
        )

    def _mine(
        self, model: OcganModel, shape: tuple[int, ...], gen: torch.Generator
    ) -> torch.Tensor:
        """Informative negatives: latents moved towards what the classifier calls "not normal"."""
        cfg = self.config
        mu = torch.rand(shape, generator=gen) * 2 - 1
        for p in model.classifier.parameters():
            p.requires_grad_(False)
        for p in model.decoder.parameters():
            p.requires_grad_(False)
        for _ in range(cfg.mining_steps):
            mu.requires_grad_(True)
            loss = _bce(model.classifier(model.decoder(torch.tanh(mu))), 0.0) * shape[0]
            (grad,) = torch.autograd.grad(loss, mu)
            mu = (mu - cfg.mining_lr * grad).detach()
        for p in model.classifier.parameters():
            p.requires_grad_(True)
        for p in model.decoder.parameters():
            p.requires_grad_(True)
        return torch.tanh(mu).detach()

    def fit_model(self, images: torch.Tensor, progress: ProgressFn) -> None:
        cfg = self.config
        model = self.torch_model
        assert isinstance(model, OcganModel)
        with torch.no_grad():
            data = torch.cat(
                [tanh_range_input(images[sl], cfg.work_size) for sl in batches(len(images), 64)]
            )
        betas = (0.5, 0.999)
        opt_g = torch.optim.Adam(
            [*model.encoder.parameters(), *model.decoder.parameters()], lr=cfg.lr, betas=betas
        )
        opt_d = torch.optim.Adam(
            [*model.visual_critic.parameters(), *model.latent_critic.parameters()],
            lr=cfg.lr,
            betas=betas,
        )
        opt_c = torch.optim.Adam(model.classifier.parameters(), lr=cfg.lr, betas=betas)
        gen = torch.Generator().manual_seed(cfg.seed)
        n = len(data)
        mine_from = int(cfg.mining_start * cfg.epochs)
        for epoch in range(cfg.epochs):
            model.train()
            order = torch.randperm(n, generator=gen)
            sums = {"rec": 0.0, "d": 0.0, "c": 0.0}
            for sl in batches(n, cfg.batch_size):
                x = (
                    tanh_range_input(self.training_batch(images, order[sl]), cfg.work_size)
                    if self.augmenting
                    else data[order[sl]]
                )
                b = len(x)
                if b < 2:
                    continue
                noisy = x + cfg.noise_std * torch.randn(x.shape, generator=gen)
                lshape = (b, *model.latent_shape)
                u = torch.rand(lshape, generator=gen) * 2 - 1
                mining = cfg.mining_steps > 0 and epoch >= mine_from
                negatives = self._mine(model, lshape, gen) if mining else u
                # (1) critics: Dv real images vs De(u); Dl U(-1, 1) vs En(x)
                with torch.no_grad():
                    latent = model.encoder(noisy)
                    fake_u = model.decoder(u)
                    recon = model.decoder(latent)
                d_loss = 0.5 * (
                    _bce(model.visual_critic(x), 1.0) + _bce(model.visual_critic(fake_u), 0.0)
                )
                d_loss = d_loss + 0.5 * (
                    _bce(model.latent_critic(u), 1.0) + _bce(model.latent_critic(latent), 0.0)
                )
                opt_d.zero_grad()
                d_loss.backward()
                opt_d.step()
                # (2) classifier: reconstructions of real images (1) vs images from random latents (0)
                c_loss = 0.5 * (
                    _bce(model.classifier(recon), 1.0) + _bce(model.classifier(fake_u), 0.0)
                )
                opt_c.zero_grad()
                c_loss.backward()
                opt_c.step()
                # (3) autoencoder: reconstruction + latent adversarial + visual adversarial on negatives
                latent = model.encoder(noisy)
                rec_loss = 0.5 * F.mse_loss(model.decoder(latent), x)
                g_loss = (
                    cfg.rec_weight * rec_loss
                    + cfg.latent_adv_weight * _bce(model.latent_critic(latent), 1.0)
                    + _bce(model.visual_critic(model.decoder(negatives)), 1.0)
                )
                opt_g.zero_grad()
                g_loss.backward()
                opt_g.step()
                sums["rec"] += float(rec_loss.detach()) * b
                sums["d"] += float(d_loss.detach()) * b
                sums["c"] += float(c_loss.detach()) * b
            stats = " ".join(f"{k} {v / n:.4f}" for k, v in sums.items())
            progress(
                f"ocgan: epoch ({stats}{', mining' if epoch >= mine_from else ''})",
                epoch + 1,
                cfg.epochs,
            )
        model.eval()


DETECTOR = OcganDetector
