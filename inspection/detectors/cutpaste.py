"""CutPaste: self-supervised 3-way pretext classifier + Gaussian density estimation.

Li, Sohn, Yoon, Pfister, "CutPaste: Self-Supervised Learning for Anomaly Detection and
Localization", CVPR 2021 (arXiv:2104.04015). Paper on MVTec AD: image AUROC 95.2 (3-way,
single model) / 96.1 (ensemble of 5), pixel AUROC 96.0 (patch-level model).

What is implemented, and how it departs from the paper:

* **Pretext task** (paper Sec. 3.1-3.2): a classifier separates normal images, *CutPaste*
  images (a rectangle of area 2-15 % of the image, aspect ratio in [0.3, 3.3], cut from one
  place, colour-jittered and pasted elsewhere) and *CutPaste-Scar* images (a thin 2-16 x
  10-25 px rectangle, rotated within +-45 degrees). Augmentation runs at train time only
  (numpy / OpenCV); sizes are the paper's for 256 px images, scaled with ``image_size``.
* **Encoder**: ImageNet-initialised EfficientNet-Lite0 (paper: ResNet-18) up to block 4
  (112 channels, stride 16), global-average-pooled, followed by an MLP projection head and a
  linear classifier. *Compute departure*: fine-tuning the whole encoder does not fit a 2-core
  CPU budget, so the blocks before ``train_from`` are frozen and their outputs are cached once
  for every normal image and a fixed pool of augmented copies (``aug_copies`` per image);
  only blocks ``train_from..4`` and the heads train (SGD, lr 0.03, momentum 0.9, cosine
  schedule, weight decay 3e-5 as in the paper). Epoch count is set by the CPU budget.
* **Patch level** (paper Sec. 3.3 / 4.2): the paper trains a second model on 64 px patches.
  Here a second head shares the encoder: a 64 px patch embedding is the average of the
  stride-16 feature map over the window covering the patch (fully convolutional, so it is
  computed densely for every window in one pass). The patch head is trained on windows of
  normal images versus windows centred on patch-scale CutPaste / Scar pastes (paste sizes
  relative to the 64 px patch, as in the paper).
* **Density** (paper Sec. 3.3): Gaussian density estimator on L2-normalised embeddings of the
  normal training images before the projection head: mean and Ledoit-Wolf shrunk covariance;
  the image score is the Mahalanobis distance of the image embedding. The anomaly map is the
  Mahalanobis distance of every dense patch embedding to one Gaussian fitted on all normal
  patch embeddings, bilinearly upsampled and Gaussian-smoothed (sigma 4 px at 256 px, the
  paper's receptive-field smoothing).
* **Score mode**: ``"image"`` is the paper's image-level density score above; ``"map_max"``
  is the maximum of the patch-level map (the paper evaluates the patch model on localisation
  only). The default, ``"auto"``, lets the engine pick one on synthetic defects painted onto the
  held-out normal images (:mod:`inspection.validation`); the choice is saved with the model.

The eval forward (encoder -> embeddings -> Mahalanobis against stored buffers -> map) is plain
tensor algebra and exports to OpenVINO.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import cv2
import numpy as np
import torch
from anomalib.data import InferenceBatch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from inspection.detectors._common import (
    GaussianBlur,
    Lite0Trunk,
    batched_features,
    fit_gaussian,
    freeze,
    mahalanobis,
    train_epochs,
)
from inspection.detectors.base import Detector, DetectorConfig, ProgressFn, batches

#: Class labels of the 3-way pretext task.
NORMAL, CUTPASTE, SCAR = 0, 1, 2
_LAST_BLOCK = 4  # Lite0 block 4: 112 channels at stride 16


class CutPasteConfig(DetectorConfig):
    """CutPaste settings (paper defaults unless noted; epochs sized for a 2-core CPU)."""

    type: Literal["cutpaste"] = "cutpaste"
    train_from: int = Field(4, ge=0, le=_LAST_BLOCK, description="First trainable Lite0 block.")
    epochs: int = Field(10, ge=1, description="Passes over the cached augmentation pool.")
    aug_copies: int = Field(1, ge=1, le=8, description="Augmented copies of each type per image.")
    lr: float = Field(0.03, gt=0)
    weight_decay: float = Field(3e-5, ge=0)
    head_width: int = Field(128, ge=8)
    patch_size: int = Field(64, ge=8, description="Patch side in px at image_size 256 (scaled).")
    patch_loss_weight: float = Field(1.0, ge=0)
    smoothing_sigma: float = Field(4.0, ge=0, description="Map smoothing, px at 256 (scaled).")
    score_mode: Literal["image", "map_max", "auto"] = Field(
        "auto",
        description="Image score: image-level GDE, patch-map maximum, or chosen at training.",
    )


# -- train-time augmentation ------------------------------------------------------------------


def _jitter(patch: np.ndarray, rng: np.random.Generator, strength: float = 0.1) -> np.ndarray:
    """Brightness / contrast jitter of an (h, w, 3) float patch in [0, 1] (paper: 0.1)."""
    b = rng.uniform(1 - strength, 1 + strength)
    c = rng.uniform(1 - strength, 1 + strength)
    mean = patch.mean()
    return np.clip((patch * b - mean) * c + mean, 0.0, 1.0)


def cutpaste(
    image: np.ndarray, rng: np.random.Generator, area_ref: float
) -> tuple[np.ndarray, tuple[int, int]]:
    """CutPaste one (H, W, 3) float image in [0, 1]; returns (image, paste centre (y, x)).

    ``area_ref`` is the reference area (the whole image for image-level CutPaste, one patch
    for patch-level): the rectangle covers 2-15 % of it, with aspect ratio in [0.3, 1) or
    [1, 3.3) (each half chosen with probability 1/2).
    """
    height, width = image.shape[:2]
    area = rng.uniform(0.02, 0.15) * area_ref
    aspect = rng.uniform(0.3, 1.0) if rng.uniform() < 0.5 else rng.uniform(1.0, 3.3)
    ch = int(np.clip(round(math.sqrt(area / aspect)), 1, height - 1))
    cw = int(np.clip(round(math.sqrt(area * aspect)), 1, width - 1))
    sy, sx = int(rng.integers(0, height - ch + 1)), int(rng.integers(0, width - cw + 1))
    ty, tx = int(rng.integers(0, height - ch + 1)), int(rng.integers(0, width - cw + 1))
    out = image.copy()
    out[ty : ty + ch, tx : tx + cw] = _jitter(image[sy : sy + ch, sx : sx + cw], rng)
    return out, (ty + ch // 2, tx + cw // 2)


def cutpaste_scar(
    image: np.ndarray, rng: np.random.Generator, scale: float
) -> tuple[np.ndarray, tuple[int, int]]:
    """CutPaste-Scar: a (2-16) x (10-25) px rectangle (x ``scale``) rotated +-45 deg, pasted."""
    height, width = image.shape[:2]
    w = max(1, round(rng.uniform(2, 16) * scale))
    h = max(2, round(rng.uniform(10, 25) * scale))
    h, w = min(h, height - 1), min(w, width - 1)
    sy, sx = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    patch = _jitter(image[sy : sy + h, sx : sx + w], rng).astype(np.float32)
    angle = rng.uniform(-45, 45)
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(rot[0, 0]), abs(rot[0, 1])
    bw, bh = math.ceil(h * sin + w * cos), math.ceil(h * cos + w * sin)
    bw, bh = min(bw, width), min(bh, height)
    rot[0, 2] += bw / 2 - w / 2
    rot[1, 2] += bh / 2 - h / 2
    warped = cv2.warpAffine(patch, rot, (bw, bh), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(np.ones((h, w), np.float32), rot, (bw, bh), flags=cv2.INTER_LINEAR)
    ty, tx = int(rng.integers(0, height - bh + 1)), int(rng.integers(0, width - bw + 1))
    out = image.copy()
    region = out[ty : ty + bh, tx : tx + bw]
    m = (mask > 0.5)[..., None]
    out[ty : ty + bh, tx : tx + bw] = np.where(m, warped.reshape(bh, bw, -1), region)
    return out, (ty + bh // 2, tx + bw // 2)


# -- network ----------------------------------------------------------------------------------


def _head(in_dim: int, width: int) -> nn.Sequential:
    """Projection MLP (paper: fully connected + BN + ReLU layers) and a linear 3-way classifier."""
    return nn.Sequential(
        nn.Linear(in_dim, width),
        nn.BatchNorm1d(width),
        nn.ReLU(inplace=True),
        nn.Linear(width, width),
        nn.BatchNorm1d(width),
        nn.ReLU(inplace=True),
        nn.Linear(width, 3),
    )


class CutPasteModel(nn.Module):
    """Lite0 encoder + pretext heads + Gaussian densities for image and patch embeddings.

    Eval forward: (N, 3, H, W) normalised -> InferenceBatch(pred_score (N,) image Mahalanobis
    distance, or the map's maximum with ``score_mode="map_max"``; anomaly_map (N, 1, H, W)
    smoothed patch Mahalanobis distance).
    """

    image_mean: torch.Tensor
    image_precision: torch.Tensor
    patch_mean: torch.Tensor
    patch_precision: torch.Tensor

    def __init__(
        self,
        backbone: str,
        head_width: int,
        patch_cells: int,
        sigma: float,
        score_mode: str = "image",
    ) -> None:
        super().__init__()
        self.score_mode = score_mode
        self.encoder = Lite0Trunk(backbone, [_LAST_BLOCK])
        dim = self.encoder.channels[-1]
        self.dim = dim
        self.patch_cells = patch_cells
        self.image_head = _head(dim, head_width)
        self.patch_head = _head(dim, head_width)
        self.register_buffer("image_mean", torch.zeros(dim))
        self.register_buffer("image_precision", torch.eye(dim))
        self.register_buffer("patch_mean", torch.zeros(dim))
        self.register_buffer("patch_precision", torch.eye(dim))
        self.blur = GaussianBlur(sigma)

    def encode_tail(self, feats: torch.Tensor, start: int) -> torch.Tensor:
        """Blocks ``start..4`` on a cached intermediate map -> (N, 112, h, w)."""
        return self.encoder.run(feats, start, _LAST_BLOCK + 1)

    @staticmethod
    def image_embedding(fmap: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> (N, C) global average pool (the representation the GDE models)."""
        return fmap.mean(dim=(-2, -1))

    def patch_embeddings(self, fmap: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> (N, C, h, w): mean over the ``patch_cells`` window at each position."""
        k = self.patch_cells
        if k <= 1:
            return fmap
        padded = F.pad(fmap, ((k - 1) // 2, k // 2, (k - 1) // 2, k // 2), mode="replicate")
        return F.avg_pool2d(padded, kernel_size=k, stride=1)

    def forward(self, images: torch.Tensor) -> InferenceBatch:
        fmap = self.encoder(images)[-1]
        emb = F.normalize(self.image_embedding(fmap), dim=1)
        score = mahalanobis(emb, self.image_mean, self.image_precision)
        patches = F.normalize(self.patch_embeddings(fmap), dim=1).permute(0, 2, 3, 1)
        pmap = mahalanobis(patches, self.patch_mean, self.patch_precision).unsqueeze(1)
        amap = self.blur(pmap, images.shape[-2:])
        if self.score_mode == "map_max":
            score = amap.amax(dim=(1, 2, 3))
        return InferenceBatch(pred_score=score, anomaly_map=amap)


# -- detector ---------------------------------------------------------------------------------


class CutPasteDetector(Detector):
    """CutPaste 3-way (normal / CutPaste / Scar) with image- and patch-level GDE."""

    key = "cutpaste"
    Config = CutPasteConfig
    paper = "Li et al., CutPaste, CVPR 2021, arXiv:2104.04015"
    #: torch vs OpenVINO fp32 (CPU): measured max deviation 2.3e-6 (score), 1.3e-6 (map) at quick_config,
    #: score relative / map relative to its range; the base's default tolerances keep a >30x
    #: margin.

    config: CutPasteConfig
    score_modes: ClassVar[tuple[str, ...]] = ("image", "map_max")

    @classmethod
    def quick_config(cls) -> CutPasteConfig:
        """Seconds-scale settings for tests at 64 px."""
        return CutPasteConfig(image_size=64, epochs=3, batch_size=16, head_width=32)

    def _scale(self) -> float:
        return self.config.image_size / 256.0

    def _patch_px(self) -> int:
        return max(8, round(self.config.patch_size * self._scale()))

    def build_model(self) -> nn.Module:
        cfg = self.config
        cells = max(1, round(self._patch_px() / 16))
        sigma = cfg.smoothing_sigma * self._scale()
        return CutPasteModel(cfg.backbone, cfg.head_width, cells, sigma, self.built_score_mode())

    def _augment(
        self, raw: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment raw images (B, H, W, 3) uint8: (B*3, 3, H, W) normalised + (B*3, 2) centres.

        Each image gives three consecutive rows: image-scale CutPaste, Scar, and patch-scale
        CutPaste. Centres (y, x) of the pasted region are in pixels. Pastes are made on the
        camera image and then normalised like any input (photometric standardisation
        included), so a pasted image differs from a normal one only by the paste: pasting in
        the normalised domain and mapping back would clip standardised pixels outside [0, 1]
        in augmented images alone, a shortcut the classifier can learn instead of the paste.
        """
        cfg = self.config
        size = cfg.image_size
        patch_area = float(self._patch_px() ** 2)
        out: list[np.ndarray] = []
        centres: list[tuple[int, int]] = []
        for img in raw.astype(np.float32) / 255.0:
            a, ca = cutpaste(img, rng, float(size * size))
            b, cb = cutpaste_scar(img, rng, self._scale())
            c, cc = cutpaste(img, rng, patch_area)
            out += [a, b, c]
            centres += [ca, cb, cc]
        arr = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float()
        return self.normalize(arr), torch.tensor(centres, dtype=torch.long)

    def fit_model(self, images: torch.Tensor, progress: ProgressFn) -> None:
        cfg = self.config
        model = self.torch_model
        assert isinstance(model, CutPasteModel)
        start = cfg.train_from
        trunk = model.encoder
        for i, block in enumerate(trunk.blocks):
            if i < start:
                freeze(block)
        if start > 0:
            freeze(trunk.stem)
        trunk.eval()

        def prefix(x: torch.Tensor) -> torch.Tensor:
            return trunk.run(x, -1, start) if start > 0 else x

        normal_cache = batched_features(
            prefix, images, cfg.batch_size, progress, "cutpaste: cache normals"
        )[0]
        # fixed pool of augmented copies, pushed through the frozen prefix once
        rng = np.random.default_rng(cfg.seed)
        aug_parts: list[torch.Tensor] = []
        centre_parts: list[torch.Tensor] = []
        n = len(images)
        raw = self.training_images
        if raw is None:
            raise RuntimeError("cutpaste: fit_model runs inside fit(), which holds the raw images")
        with torch.no_grad():
            for k in range(cfg.aug_copies):
                for sl in batches(n, cfg.batch_size):
                    aug, centres = self._augment(raw[sl], rng)
                    aug_parts.append(prefix(aug))
                    centre_parts.append(centres)
                    progress("cutpaste: cache augmented", k * n + sl.stop, cfg.aug_copies * n)
        aug_cache, centre_cache = torch.cat(aug_parts), torch.cat(centre_parts)
        del aug_parts
        self._train_heads(model, normal_cache, aug_cache, centre_cache, progress)
        self._fit_densities(model, normal_cache, progress)

    def _train_heads(
        self,
        model: CutPasteModel,
        normal_cache: torch.Tensor,
        aug_cache: torch.Tensor,
        centres: torch.Tensor,
        progress: ProgressFn,
    ) -> None:
        cfg = self.config
        start = cfg.train_from
        n = len(normal_cache)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(cfg.seed)
        stride = 16  # Lite0 block 4

        def train_mode() -> None:  # the frozen prefix keeps its BatchNorm statistics
            model.train()
            model.encoder.stem.eval()
            for i, block in enumerate(model.encoder.blocks):
                if i < start:
                    block.eval()

        def batch_loss(idx: torch.Tensor) -> torch.Tensor | None:
            if len(idx) < 2:  # BatchNorm needs two samples
                return None
            copy = torch.randint(0, cfg.aug_copies, (len(idx),), generator=gen)
            rows = (copy * n + idx) * 3
            feats = torch.cat(
                [normal_cache[idx], aug_cache[rows], aug_cache[rows + 1], aug_cache[rows + 2]]
            )
            fmap = model.encode_tail(feats, start)
            b = len(idx)
            # image level: normal / CutPaste / Scar over the whole image
            logits = model.image_head(model.image_embedding(fmap[: 3 * b]))
            labels = torch.arange(3).repeat_interleave(b)
            loss = F.cross_entropy(logits, labels)
            # patch level: random window of a normal image / window on a patch-scale paste
            pemb = model.patch_embeddings(fmap)
            h, w = pemb.shape[-2:]
            ry = torch.randint(0, h, (b,), generator=gen)
            rx = torch.randint(0, w, (b,), generator=gen)
            scar_c = (centres[rows + 1].float() / stride).long()
            patch_c = (centres[rows + 2].float() / stride).long()
            ar = torch.arange(b)
            windows = torch.cat(
                [
                    pemb[ar, :, ry.clamp(max=h - 1), rx.clamp(max=w - 1)],
                    pemb[
                        3 * b + ar,
                        :,
                        patch_c[:, 0].clamp(max=h - 1),
                        patch_c[:, 1].clamp(max=w - 1),
                    ],
                    pemb[
                        2 * b + ar,
                        :,
                        scar_c[:, 0].clamp(max=h - 1),
                        scar_c[:, 1].clamp(max=w - 1),
                    ],
                ]
            )
            return loss + cfg.patch_loss_weight * F.cross_entropy(model.patch_head(windows), labels)

        train_epochs(
            model, opt, n, batch_loss, cfg, progress, "cutpaste", gen=gen, train_mode=train_mode
        )

    @torch.no_grad()
    def _fit_densities(
        self, model: CutPasteModel, normal_cache: torch.Tensor, progress: ProgressFn
    ) -> None:
        model.eval()
        image_embs: list[torch.Tensor] = []
        patch_embs: list[torch.Tensor] = []
        for sl in batches(len(normal_cache), self.config.batch_size):
            fmap = model.encode_tail(normal_cache[sl], self.config.train_from)
            image_embs.append(F.normalize(model.image_embedding(fmap), dim=1))
            pe = F.normalize(model.patch_embeddings(fmap), dim=1)
            patch_embs.append(pe.permute(0, 2, 3, 1).reshape(-1, pe.shape[1]))
            progress("cutpaste: embeddings", sl.stop, len(normal_cache))
        mean, precision = fit_gaussian(torch.cat(image_embs))
        model.image_mean.copy_(mean)
        model.image_precision.copy_(precision)
        mean, precision = fit_gaussian(torch.cat(patch_embs))
        model.patch_mean.copy_(mean)
        model.patch_precision.copy_(precision)


DETECTOR = CutPasteDetector
