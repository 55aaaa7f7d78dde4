"""Frozen-backbone image descriptors for defect typing, with training-time views.

The typer classifies the **whole image** (resized to a square): at test time a crop would need a
detector's anomaly map, and ground-truth masks must never be used there. The backbone is the
ImageNet EfficientNet-Lite0 of :mod:`inspection.backbone`, kept frozen; the feature maps named
by ``FeatureConfig.levels`` (default the outputs of its last three stages, ``blocks.4..6``:
112 + 192 + 320 channels at strides 16, 32, 32; ``head`` is the 1280-channel ImageNet head) are
each globally average- and max-pooled, because typical defects (a blowhole covers ~0.2 % of a
magnetic tile) vanish in an average alone, and concatenated (multi-scale pooling, as in
hypercolumn / multi-layer descriptors for open-set and OOD detection: Lee et al., NeurIPS 2018
feature ensembles; Sun et al., ICML 2022 use the penultimate layer of a trained network).

Few labelled defects exist (32 Fray images in magnetic tile), so training uses several views of
each image: the dihedral group (flips and 90 degree rotations) plus random albumentations
transforms (small affine jitter, brightness/contrast, noise). View 0 is always the image as is.

The frozen backbone runs through OpenVINO by default (same numbers as torch in f32, about ten
times faster on CPU); the station later runs the same graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from inspection.backbone import LITE0_MEAN, LITE0_STD, install_offline_weights
from inspection.openset.config import FeatureConfig
from inspection.openset.typer_runtime import resize_images, to_nchw

#: Callback for long work: (stage, done, total).
ProgressFn = Callable[[str, int, int], None]


def no_progress(stage: str, done: int, total: int) -> None:
    """Default progress callback: say nothing."""


class PooledBackbone(nn.Module):
    """Raw RGB in [0, 1], (N, 3, S, S) -> (N, D) pooled features; normalisation inside."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, config: FeatureConfig, pretrained: bool = True) -> None:
        super().__init__()
        import timm

        if pretrained:
            install_offline_weights(config.backbone)
        self.body = timm.create_model(
            config.backbone, pretrained=pretrained, num_classes=0, global_pool=""
        )
        self.pooling = config.pooling
        self.levels = tuple(config.levels)
        self._taps = {int(level.split(".")[1]) for level in self.levels if level != "head"}
        self._out_dim: int | None = None
        self.register_buffer("mean", torch.tensor(LITE0_MEAN).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(LITE0_STD).view(1, -1, 1, 1))
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    @property
    def out_dim(self) -> int:
        """D: pooled channels of every level (twice for ``avgmax``)."""
        if self._out_dim is None:
            with torch.no_grad():
                maps = self._maps(torch.zeros(1, 3, 32, 32))
            channels = sum(int(maps[level].shape[1]) for level in self.levels)
            self._out_dim = 2 * channels if self.pooling == "avgmax" else channels
        return self._out_dim

    def _maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The requested feature maps of normalised input ``x`` (one pass through the body)."""
        if self.levels == ("head",):
            return {"head": self.body(x)}
        body = self.body
        h = body.bn1(body.conv_stem(x))
        maps: dict[str, torch.Tensor] = {}
        for i, block in enumerate(body.blocks):
            h = block(h)
            if i in self._taps:
                maps[f"blocks.{i}"] = h
        if "head" in self.levels:
            maps["head"] = body.bn2(body.conv_head(h))
        return maps

    def _pool(self, fmap: torch.Tensor) -> list[torch.Tensor]:
        if self.pooling == "avg":
            return [fmap.mean(dim=(2, 3))]
        if self.pooling == "max":
            return [fmap.amax(dim=(2, 3))]
        return [fmap.mean(dim=(2, 3)), fmap.amax(dim=(2, 3))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self._maps((x - self.mean) / self.std)
        return torch.cat([p for level in self.levels for p in self._pool(maps[level])], dim=1)


def dihedral(image: np.ndarray, k: int) -> np.ndarray:
    """View ``k`` (0..7) of the dihedral group: identity, h-flip, v-flip, rot180, rot90, rot270,
    transpose, anti-transpose. The first four keep a non-square part's orientation."""
    ops: tuple[Callable[[np.ndarray], np.ndarray], ...] = (
        lambda a: a,
        lambda a: a[:, ::-1],
        lambda a: a[::-1],
        lambda a: a[::-1, ::-1],
        lambda a: np.rot90(a, 1),
        lambda a: np.rot90(a, 3),
        lambda a: a.transpose(1, 0, 2),
        lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    )
    return np.ascontiguousarray(ops[k](image))


def random_view_transform(seed: int) -> Any:
    """Albumentations pipeline for random training views (seeded, so views are reproducible)."""
    import albumentations as A

    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.Affine(
                rotate=(-15, 15),
                scale=(0.9, 1.1),
                translate_percent=(-0.05, 0.05),
                border_mode=cv2.BORDER_REFLECT_101,
                p=1.0,
            ),
            A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.8),
            A.GaussNoise(std_range=(0.01, 0.04), p=0.5),
        ],
        seed=seed,
    )


class FeatureExtractor:
    """Frozen pooled backbone as a batch function: images -> (N, D) float32 features.

    Args:
        config: feature settings.
        pretrained: load the offline ImageNet weights (False only for shape tests).
    """

    def __init__(self, config: FeatureConfig | None = None, pretrained: bool = True) -> None:
        self.config = config or FeatureConfig()
        self.module = PooledBackbone(self.config, pretrained=pretrained)
        self._compiled: Any = None

    @property
    def out_dim(self) -> int:
        return self.module.out_dim

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.config.backend == "torch":
            with torch.inference_mode():
                return self.module(torch.from_numpy(batch)).numpy()
        if self._compiled is None:
            import openvino as ov

            from inspection.ov_export import to_openvino

            size = self.config.image_size
            model = to_openvino(
                self.module,
                torch.zeros(1, 3, size, size),
                input=[ov.PartialShape([-1, 3, size, size])],
            )
            self._compiled = ov.Core().compile_model(
                model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
            )
        return np.asarray(self._compiled(batch)[0])

    def extract(self, images: np.ndarray, progress: ProgressFn = no_progress) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB -> (N, D) float32 features of the images as they are."""
        images = resize_images(images, self.config.image_size)
        out = np.zeros((len(images), self.out_dim), dtype=np.float32)
        bs = self.config.batch_size
        for start in range(0, len(images), bs):
            out[start : start + bs] = self._run(to_nchw(images[start : start + bs]))
            progress("features", min(start + bs, len(images)), len(images))
        return out

    @property
    def n_views(self) -> int:
        return self.config.dihedral_views + self.config.random_views

    def extract_views(
        self, images: np.ndarray, seed: int = 0, progress: ProgressFn = no_progress
    ) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, V, D) features of V training views; view 0 = identity."""
        images = resize_images(images, self.config.image_size)
        transform = random_view_transform(seed) if self.config.random_views else None
        out = np.zeros((len(images), self.n_views, self.out_dim), dtype=np.float32)
        chunk = max(1, 64 // self.n_views)  # bound memory: views of a few images at a time
        for start in range(0, len(images), chunk):
            views: list[np.ndarray] = []
            for image in images[start : start + chunk]:
                views.extend(dihedral(image, k) for k in range(self.config.dihedral_views))
                if transform is not None:
                    views.extend(
                        transform(image=image)["image"] for _ in range(self.config.random_views)
                    )
            feats = self.extract(np.stack(views))
            out[start : start + chunk] = feats.reshape(-1, self.n_views, self.out_dim)
            progress("features", min(start + chunk, len(images)), len(images))
        return out
