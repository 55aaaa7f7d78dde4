"""Mem-AE: memory-augmented autoencoder, in pixel space (``memae``) and feature space (``memae_feat``).

Gong, Liu, Le, Saha, Mansour, Venkatesh, van den Hengel, "Memorizing Normality to Detect
Anomaly: Memory-augmented Deep Autoencoder for Unsupervised Anomaly Detection", ICCV 2019
(arXiv:1904.02639).

The encoder's latent map is replaced, at every spatial position, by a convex combination of
``memory_size`` learnt memory items: addressing weights are the softmax of the dot products
between the latent vector and the items (paper Eq. 4), hard-shrunk with the paper's continuous
ReLU form ``max(w - lambda, 0) * w / (|w - lambda| + eps)`` (Eq. 7, exportable, no branching)
and L1-renormalised; the decoder sees only the memory read-out, so anomalies reconstruct
poorly. Loss: reconstruction MSE + ``entropy_weight`` (paper alpha = 2e-4) x entropy of the
addressing weights (Eq. 10). Shrinkage threshold lambda defaults to 2.5 / N (paper: a value in
[1/N, 3/N]).

* ``memae``: 2-D convolutional autoencoder on the image (the paper's image-data variant:
  strided 3x3 conv + BN + ReLU encoder, transposed-conv decoder), run internally at
  ``work_size`` px (a CPU-budget choice; the map is upsampled back to the input size).
* ``memae_feat``: the same memory module in an autoencoder that reconstructs frozen ImageNet
  features (offline EfficientNet-Lite0 blocks 2 and 4, concatenated at stride 8 and
  standardised per channel with statistics of the normal training images) instead of pixels.
  Not in the paper; added to compare pixel and feature reconstruction under one recipe.

Score (paper Sec. 4: the reconstruction error of the sample): ``score_mode="mean"`` gives the
mean squared error over all positions; ``"map_max"`` the maximum of the smoothed map, which
keeps a small defect from being averaged away; ``"map_max_std"`` that maximum after
standardising each position by the normal training images' maps (not in the paper;
:class:`~inspection.detectors.base.PositionStats`); ``"auto"`` (default) lets the engine choose on
synthetic defects painted onto held-out normal images (:mod:`inspection.validation`).
Map: per-position squared error (mean over channels), bilinearly upsampled to the input size and
Gaussian-smoothed (``smoothing_sigma`` px at 256 px, scaled with the image size).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import ClassVar, Literal

import torch
from anomalib.data import InferenceBatch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from inspection.detectors._common import (
    GaussianBlur,
    Lite0Trunk,
    batched_features,
    freeze,
    resize_to,
    train_epochs,
    upsample,
)
from inspection.detectors.base import (
    RECONSTRUCTION_SCORE_MODES,
    Detector,
    ProgressFn,
    TrainedDetectorConfig,
    batches,
)


def hard_shrink_relu(w: torch.Tensor, threshold: float, eps: float = 1e-12) -> torch.Tensor:
    """Paper Eq. 7: ``max(w - t, 0) * w / (|w - t| + eps)`` (≈ w where w > t, else 0)."""
    return F.relu(w - threshold) * w / (torch.abs(w - threshold) + eps)


class MemoryModule(nn.Module):
    """Memory of ``size`` items of dimension ``dim``, addressed at every spatial position.

    Forward: (N, C, h, w) latent -> ((N, C, h, w) read-out, (N*h*w, size) addressing weights).
    """

    def __init__(self, size: int, dim: int, shrink_threshold: float) -> None:
        super().__init__()
        self.size = size
        self.dim = dim
        self.shrink_threshold = shrink_threshold
        bound = 1.0 / math.sqrt(dim)
        self.items = nn.Parameter(torch.empty(size, dim).uniform_(-bound, bound))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
        weights = torch.softmax(flat @ self.items.t(), dim=1)
        if self.shrink_threshold > 0:
            weights = hard_shrink_relu(weights, self.shrink_threshold)
            weights = F.normalize(weights, p=1, dim=1)
        read = (weights @ self.items).reshape(n, h, w, c).permute(0, 3, 1, 2)
        return read, weights


def addressing_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the addressing weights (paper Eq. 10), a scalar."""
    return (-weights * torch.log(weights + 1e-12)).sum(dim=1).mean()


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 3, 2, 1, output_padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


@dataclass(frozen=True)
class MemorySpec:
    """What both Mem-AE variants are built with besides their input: encoder ``widths``, the
    memory's size and shrinkage threshold, the map's smoothing sigma and the image score mode."""

    widths: tuple[int, ...]
    memory_size: int
    shrink_threshold: float
    sigma: float
    score_mode: str


class _MemoryAutoencoder(nn.Module):
    """Encoder -> memory -> decoder, and the anomaly output both Mem-AE variants compute from
    the reconstruction error (subclasses build ``encoder``, ``memory``, ``decoder`` and
    ``blur``, in that order)."""

    encoder: nn.Module
    memory: MemoryModule
    decoder: nn.Module
    blur: GaussianBlur
    score_mode: str

    def __init__(self, spec: MemorySpec) -> None:
        super().__init__()
        self.score_mode = spec.score_mode

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prepared input -> (reconstruction, addressing weights)."""
        read, weights = self.memory(self.encoder(x))
        return self.decoder(read), weights

    def anomaly(self, x: torch.Tensor, size: Sequence[int]) -> InferenceBatch:
        """Score and map of prepared input ``x``: the squared reconstruction error (mean over
        channels) smoothed to ``size``; the image score per ``score_mode``."""
        recon, _ = self.reconstruct(x)
        err = ((recon - x) ** 2).mean(dim=1, keepdim=True)
        amap = self.blur(err, size)
        score = err.mean(dim=(1, 2, 3)) if self.score_mode == "mean" else amap.amax(dim=(1, 2, 3))
        return InferenceBatch(pred_score=score, anomaly_map=amap)


class MemAEModel(_MemoryAutoencoder):
    """Pixel-space Mem-AE. ``widths`` are the encoder channels, each stage halving resolution.

    Eval forward: (N, 3, H, W) normalised -> InferenceBatch(score (N,), map (N, 1, H, W)).
    """

    def __init__(self, work_size: int, spec: MemorySpec) -> None:
        super().__init__(spec)
        self.work_size = work_size
        chans = [3, *spec.widths]
        self.encoder = nn.Sequential(*[_down(a, b) for a, b in pairwise(chans)])
        self.memory = MemoryModule(spec.memory_size, spec.widths[-1], spec.shrink_threshold)
        rev = chans[::-1]
        layers: list[nn.Module] = [_up(a, b) for a, b in pairwise(rev[:-1])]
        layers.append(nn.ConvTranspose2d(rev[-2], 3, 3, 2, 1, output_padding=1))
        self.decoder = nn.Sequential(*layers)
        self.blur = GaussianBlur(spec.sigma)

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """Resize (N, 3, H, W) to the working resolution (identity when already there)."""
        return resize_to(images, self.work_size)

    def forward(self, images: torch.Tensor) -> InferenceBatch:
        return self.anomaly(self.resize(images), images.shape[-2:])


class FeatureMemAEModel(_MemoryAutoencoder):
    """Feature-space Mem-AE on frozen Lite0 blocks 2 + 4 (152 channels at stride 8).

    Features are standardised with per-channel buffers (``feat_mean`` / ``feat_std``) before
    reconstruction. Eval forward as :class:`MemAEModel`.
    """

    FEATURE_BLOCKS: ClassVar[tuple[int, int]] = (2, 4)
    feat_mean: torch.Tensor
    feat_std: torch.Tensor

    def __init__(self, backbone: str, spec: MemorySpec) -> None:
        super().__init__(spec)
        self.backbone = Lite0Trunk(backbone, list(self.FEATURE_BLOCKS))
        freeze(self.backbone)
        dim = sum(self.backbone.channels)
        self.dim = dim
        self.register_buffer("feat_mean", torch.zeros(1, dim, 1, 1))
        self.register_buffer("feat_std", torch.ones(1, dim, 1, 1))
        widths = spec.widths
        w0 = widths[0]
        enc: list[nn.Module] = [
            nn.Conv2d(dim, w0, 1, bias=False),
            nn.BatchNorm2d(w0),
            nn.ReLU(inplace=True),
        ]
        enc += [_down(a, b) for a, b in pairwise(widths)]
        self.encoder = nn.Sequential(*enc)
        self.memory = MemoryModule(spec.memory_size, widths[-1], spec.shrink_threshold)
        rev = widths[::-1]
        dec: list[nn.Module] = [_up(a, b) for a, b in pairwise(rev)]
        dec.append(nn.Conv2d(w0, dim, 1))
        self.decoder = nn.Sequential(*dec)
        self.blur = GaussianBlur(spec.sigma)

    def train(self, mode: bool = True) -> FeatureMemAEModel:
        super().train(mode)
        self.backbone.eval()
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 152, H/8, W/8) raw (unstandardised) backbone features."""
        f2, f4 = self.backbone(images)
        return torch.cat([f2, upsample(f4, f2.shape[-2:])], dim=1)

    def forward(self, images: torch.Tensor) -> InferenceBatch:
        feats = (self.features(images) - self.feat_mean) / self.feat_std
        return self.anomaly(feats, images.shape[-2:])


class MemoryAEConfig(TrainedDetectorConfig):
    """Settings both Mem-AE variants share (memory, loss, optimiser, score, map smoothing).

    Pydantic keeps a field where the base declares it, so the variants below only set their
    own defaults; ``model.json`` is read by field name, not position.
    """

    widths: tuple[int, ...]
    memory_size: int = Field(500, ge=2)
    shrink_threshold: float | None = Field(None, ge=0, description="None: 2.5 / memory_size.")
    entropy_weight: float = Field(2e-4, ge=0)
    epochs: int = Field(ge=1)
    lr: float = Field(1e-3, gt=0)
    score_mode: Literal["mean", "map_max", "map_max_std", "auto"] = Field(
        "auto",
        description="Image score: the paper's mean reconstruction error, the maximum of the "
        "smoothed map, its maximum standardised per position by the normal training maps, or "
        "chosen at training on synthetic defects (label-free).",
    )
    smoothing_sigma: float = Field(4.0, ge=0)

    def shrink(self) -> float:
        """The memory's shrinkage threshold lambda (``shrink_threshold``, else 2.5 / N)."""
        if self.shrink_threshold is not None:
            return self.shrink_threshold
        return 2.5 / self.memory_size

    def map_sigma(self) -> float:
        """The map's smoothing sigma in input pixels (``smoothing_sigma`` is at 256 px)."""
        return self.smoothing_sigma * self.image_size / 256.0


class MemAEConfig(MemoryAEConfig):
    """Pixel Mem-AE settings (paper: alpha 2e-4, lambda in [1/N, 3/N], Adam)."""

    type: Literal["memae"] = "memae"
    widths: tuple[int, ...] = (32, 64, 128, 128)
    epochs: int = Field(50, ge=1)
    work_size: int = Field(128, ge=16, description="Internal resolution (divisible by 2^stages).")


class MemAEFeatConfig(MemoryAEConfig):
    """Feature-space Mem-AE settings."""

    type: Literal["memae_feat"] = "memae_feat"
    widths: tuple[int, ...] = (128, 64)
    epochs: int = Field(40, ge=1)


def _train_memae(
    model: MemAEModel | FeatureMemAEModel,
    inputs: torch.Tensor,
    cfg: MemoryAEConfig,
    name: str,
    progress: ProgressFn,
    view: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> None:
    """Adam on reconstruction MSE + alpha * addressing entropy over ``inputs`` (already prepared).

    ``view`` (index (B,) -> prepared batch), when given, makes each batch instead of slicing
    ``inputs`` (augmented training views).
    """
    params = [p for p in model.parameters() if p.requires_grad]

    def batch_loss(idx: torch.Tensor) -> torch.Tensor | None:
        x = inputs[idx] if view is None else view(idx)
        if len(x) < 2:
            return None
        recon, weights = model.reconstruct(x)
        return F.mse_loss(recon, x) + cfg.entropy_weight * addressing_entropy(weights)

    opt = torch.optim.Adam(params, lr=cfg.lr)
    train_epochs(model, opt, len(inputs), batch_loss, cfg, progress, name)


class _MemoryAEDetector(Detector):
    """What both Mem-AE detectors share: score modes, the memory's settings, the training."""

    score_modes: ClassVar[tuple[str, ...]] = RECONSTRUCTION_SCORE_MODES

    config: MemoryAEConfig

    def memory_spec(self) -> MemorySpec:
        """The autoencoder's settings from the config, with the score mode it is built with."""
        cfg = self.config
        return MemorySpec(
            tuple(cfg.widths),
            cfg.memory_size,
            cfg.shrink(),
            cfg.map_sigma(),
            self.built_score_mode(),
        )

    def train_memory(
        self,
        model: MemAEModel | FeatureMemAEModel,
        inputs: torch.Tensor,
        images: torch.Tensor,
        prepare: Callable[[torch.Tensor], torch.Tensor],
        progress: ProgressFn,
    ) -> None:
        """Train on ``inputs`` (``images`` already prepared), or, when augmenting, on each
        batch's augmented images through ``prepare``."""

        @torch.no_grad()
        def view(index: torch.Tensor) -> torch.Tensor:
            return prepare(self.training_batch(images, index))

        _train_memae(
            model, inputs, self.config, self.key, progress, view if self.augmenting else None
        )


class MemAEDetector(_MemoryAEDetector):
    """Pixel-space Mem-AE (reconstruction of the image at ``work_size``)."""

    key = "memae"
    Config = MemAEConfig
    paper = "Gong et al., MemAE, ICCV 2019, arXiv:1904.02639"
    #: torch vs OpenVINO fp32 (CPU): measured max deviation 2.1e-7 (score), 2.2e-7 (map) at quick_config,
    #: score relative / map relative to its range; the base's default tolerances keep a >30x
    #: margin.

    config: MemAEConfig

    @classmethod
    def quick_config(cls) -> MemAEConfig:
        return MemAEConfig(
            image_size=64,
            work_size=64,
            widths=(16, 32, 32),
            memory_size=50,
            epochs=40,
            lr=3e-3,
            batch_size=8,
        )

    def build_model(self) -> nn.Module:
        cfg = self.config
        stages = len(cfg.widths)
        if cfg.work_size % (2**stages):
            raise ValueError(f"memae: work_size {cfg.work_size} must be divisible by 2^{stages}")
        return MemAEModel(cfg.work_size, self.memory_spec())

    def fit_model(self, images: torch.Tensor, progress: ProgressFn) -> None:
        model = self.torch_model
        assert isinstance(model, MemAEModel)
        with torch.no_grad():
            inputs = torch.cat([model.resize(images[sl]) for sl in batches(len(images), 64)])
        self.train_memory(model, inputs, images, model.resize, progress)


class MemAEFeatDetector(_MemoryAEDetector):
    """Feature-space Mem-AE (reconstruction of frozen Lite0 features)."""

    key = "memae_feat"
    Config = MemAEFeatConfig
    paper = "Gong et al., MemAE, ICCV 2019, arXiv:1904.02639 (feature-space variant)"
    #: torch vs OpenVINO fp32 (CPU): measured max deviation 4.7e-7 (score), 9.9e-7 (map) at quick_config,
    #: score relative / map relative to its range; the base's default tolerances keep a >30x
    #: margin.

    config: MemAEFeatConfig

    @classmethod
    def quick_config(cls) -> MemAEFeatConfig:
        return MemAEFeatConfig(
            image_size=64, widths=(32, 16), memory_size=50, epochs=15, batch_size=8
        )

    def build_model(self) -> nn.Module:
        return FeatureMemAEModel(self.config.backbone, self.memory_spec())

    def fit_model(self, images: torch.Tensor, progress: ProgressFn) -> None:
        cfg = self.config
        model = self.torch_model
        assert isinstance(model, FeatureMemAEModel)
        stages = len(cfg.widths) - 1
        fsize = math.ceil(cfg.image_size / 8)
        if fsize % (2**stages):
            raise ValueError(
                f"memae_feat: feature map side {fsize} must be divisible by 2^{stages}"
            )
        model.eval()
        feats = batched_features(
            model.features, images, cfg.batch_size, progress, f"{self.key}: features"
        )[0]
        mean = feats.mean(dim=(0, 2, 3), keepdim=True)
        std = feats.std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-6)
        model.feat_mean.copy_(mean)
        model.feat_std.copy_(std)
        inputs = (feats - mean) / std

        def prepare(batch: torch.Tensor) -> torch.Tensor:
            return (model.features(batch) - mean) / std

        self.train_memory(model, inputs, images, prepare, progress)


DETECTOR = MemAEDetector
