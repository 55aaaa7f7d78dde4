"""PaDiM: per-position multivariate Gaussians over pretrained CNN features.

Defard et al., "PaDiM: a Patch Distribution Modeling Framework for Anomaly Detection and
Localization", ICPR Workshops 2021 (arXiv:2011.08785). The network is anomalib's
``PadimModel`` on the offline EfficientNet-Lite0 backbone; fitting collects embeddings of the
normal images and fits one Gaussian per feature-map position; the anomaly map is the
Mahalanobis distance, upsampled and Gaussian-smoothed (sigma 4 px); the score is its maximum.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from inspection.backbone import LITE0_LAYERS, install_offline_weights
from inspection.detectors.base import Detector, DetectorConfig, ProgressFn, batches


class PadimConfig(DetectorConfig):
    """PaDiM settings. ``n_features`` is the random channel subset (of 176 for Lite0)."""

    type: Literal["padim"] = "padim"
    layers: tuple[str, ...] = LITE0_LAYERS
    n_features: int = Field(120, ge=1)


class PadimDetector(Detector):
    """anomalib ``PadimModel`` with a plain fit loop (no Lightning needed for a closed-form fit)."""

    key = "padim"
    Config = PadimConfig
    paper = "Defard et al., ICPR-W 2021, arXiv:2011.08785"

    config: PadimConfig

    def build_model(self) -> nn.Module:
        from anomalib.models.image.padim.torch_model import PadimModel

        install_offline_weights(self.config.backbone)
        return PadimModel(
            backbone=self.config.backbone,
            layers=list(self.config.layers),
            pre_trained=True,
            n_features=self.config.n_features,
        )

    def fit_model(self, images: torch.Tensor, progress: ProgressFn) -> None:
        model: Any = self.torch_model  # anomalib PadimModel (memory bank + closed-form fit)
        model.train()
        model.memory_bank = []
        with torch.no_grad():
            for sl in batches(len(images), self.config.batch_size):
                model(images[sl])
                progress("padim: embeddings", sl.stop, len(images))
        progress("padim: gaussian fit", 0, 1)
        model.fit()
        progress("padim: gaussian fit", 1, 1)


DETECTOR = PadimDetector
