"""Student-teacher feature pyramid matching (STFPM), optionally an ensemble of students.

Wang, Han, Xu, Zhou, "Student-Teacher Feature Pyramid Matching for Anomaly Detection",
BMVC 2021 (arXiv:2103.04257): a pretrained teacher (offline EfficientNet-Lite0) and a randomly
initialised student of the same architecture; the student regresses the teacher's normalised
features at several layers on normal images; the anomaly map is the product over layers of
the per-position squared distance of L2-normalised features.

Option ``n_students > 1`` follows Bergmann et al., "Uninformed Students: Student-Teacher
Anomaly Detection with Discriminative Latent Embeddings", CVPR 2020, where it is cheap: an
ensemble of independently initialised students, scored by mean regression error plus the
predictive variance across students.

Score (``score_mode``): the maximum of the map, as in the paper (``map_max``), or the maximum of
the map standardised per position by the normal training images' maps (``map_max_std``,
:class:`~inspection.detectors.base.PositionStats`; not in the papers); ``auto`` picks one at
training on synthetic defects painted onto the held-out normals, as for the other map-based
detectors.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from anomalib.data import InferenceBatch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from inspection.backbone import LITE0_LAYERS, install_offline_weights
from inspection.detectors.base import (
    STANDARDIZED_MAX,
    Detector,
    ProgressFn,
    TrainedDetectorConfig,
    batches,
)
from inspection.validation import EpochSelector


class StfpmConfig(TrainedDetectorConfig):
    """STFPM settings (optimiser as in the paper / anomalib: SGD lr 0.4, momentum 0.9).

    ``epochs`` defaults to 30, what the 20-minute fit budget on 2 CPU cores allows with a
    margin (the paper trains 100): one epoch over ``mt-exp``'s 539 fit images at 256 px took
    31 s on 2 idle cores (10 epochs: 310 s). On a machine shared with other jobs an epoch took
    up to 12 minutes; lower ``epochs`` there.

    Longer training is not always better: on ``mt-exp`` 30 epochs scored worse than 4 or 10.
    So by default (``epoch_selection: synthetic``) every ``validate_every`` epochs the students
    are scored on the engine's held-out normals and synthetic defects painted onto them
    (:class:`inspection.validation.EpochSelector`); the best epoch's weights are kept, and
    training stops after ``patience`` validations without improvement. No test image or label
    is involved.
    """

    type: Literal["stfpm"] = "stfpm"
    layers: tuple[str, ...] = LITE0_LAYERS
    epochs: int = Field(30, ge=1)
    lr: float = 0.4
    n_students: int = Field(1, ge=1, le=8)
    epoch_selection: Literal["last", "synthetic"] = Field(
        "synthetic",
        description="Which epoch's weights to keep: the last, or the one that separates "
        "synthetic defects painted onto the held-out normals best (label-free).",
    )
    validate_every: int = Field(3, ge=1, description="Epochs between validations.")
    patience: int = Field(
        4, ge=0, description="Stop after this many validations without improvement (0: never)."
    )
    smoothing_sigma: float = Field(4.0, ge=0.0, description="Gaussian smoothing of the map, px.")
    score_mode: Literal["map_max", "map_max_std", "auto"] = Field(
        "auto",
        description="Image score: the map maximum (the paper's), the maximum of the map "
        "standardised per position by the normal training maps, or chosen at training.",
    )


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, round(4 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


class StudentTeacherModel(nn.Module):
    """Frozen teacher, ``n`` students; eval forward -> InferenceBatch (score (N,), map (N,1,H,W))."""

    kernel: torch.Tensor

    def __init__(self, backbone: str, layers: list[str], n_students: int, sigma: float) -> None:
        super().__init__()
        from anomalib.models.components import TimmFeatureExtractor

        self.layers = layers
        self.teacher = TimmFeatureExtractor(
            backbone=backbone, pre_trained=True, layers=layers
        ).eval()
        for p in self.teacher.parameters():
            p.requires_grad = False
        self.students = nn.ModuleList(
            TimmFeatureExtractor(
                backbone=backbone, pre_trained=False, layers=layers, requires_grad=True
            )
            for _ in range(n_students)
        )
        self.sigma = sigma
        #: The score this module itself computes (always the map maximum; ``map_max_std`` is
        #: applied around it by the detector, see :func:`~inspection.detectors.base.model_score_mode`).
        self.score_mode = "map_max"
        self.register_buffer("kernel", _gaussian_kernel(sigma) if sigma > 0 else torch.ones(1))

    def train(self, mode: bool = True) -> StudentTeacherModel:
        super().train(mode)
        self.teacher.eval()
        return self

    def features(
        self, images: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
        with torch.no_grad():
            teacher = self.teacher(images)
        return teacher, [s(images) for s in self.students]

    def _smooth(self, amap: torch.Tensor) -> torch.Tensor:
        if self.sigma <= 0:
            return amap
        k = self.kernel
        pad = k.numel() // 2
        amap = F.conv2d(F.pad(amap, (pad, pad, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
        return F.conv2d(F.pad(amap, (0, 0, pad, pad), mode="reflect"), k.view(1, 1, -1, 1))

    def forward(self, images: torch.Tensor) -> InferenceBatch:
        size = images.shape[-2:]
        teacher, students = self.features(images)
        amap = torch.ones(images.shape[0], 1, *size, device=images.device)
        for layer in self.layers:
            t = F.normalize(teacher[layer], dim=1)
            preds = torch.stack([F.normalize(s[layer], dim=1) for s in students])  # (S,N,C,h,w)
            mean = preds.mean(0)
            err = 0.5 * ((t - mean) ** 2).sum(1, keepdim=True)
            if len(students) > 1:  # Uninformed Students: add predictive variance
                err = err + 0.5 * preds.var(0, unbiased=False).sum(1, keepdim=True)
            amap = amap * F.interpolate(err, size=size, mode="bilinear", align_corners=False)
        amap = self._smooth(amap)
        return InferenceBatch(pred_score=amap.amax(dim=(-2, -1)).reshape(-1), anomaly_map=amap)


def stfpm_loss(teacher: dict[str, torch.Tensor], student: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over layers of 0.5 / (h w) * ||norm(t) - norm(s)||^2, averaged over the batch."""
    loss = torch.zeros(())
    for layer, t in teacher.items():
        h, w = t.shape[-2:]
        diff = F.normalize(t, dim=1) - F.normalize(student[layer], dim=1)
        loss = loss + 0.5 / (h * w) * (diff**2).sum() / t.shape[0]
    return loss


class StfpmDetector(Detector):
    """Plain STFPM (``n_students=1``) or an Uninformed-Students-style ensemble."""

    key = "stfpm"
    Config = StfpmConfig
    paper = "Wang et al., BMVC 2021, arXiv:2103.04257; Bergmann et al., CVPR 2020"
    score_modes: ClassVar[tuple[str, ...]] = ("map_max", STANDARDIZED_MAX)

    config: StfpmConfig

    def build_model(self) -> nn.Module:
        install_offline_weights(self.config.backbone)
        cfg = self.config
        return StudentTeacherModel(
            cfg.backbone, list(cfg.layers), cfg.n_students, cfg.smoothing_sigma
        )

    def fit_model(self, images: torch.Tensor, progress: ProgressFn) -> None:
        model = self.torch_model
        assert isinstance(model, StudentTeacherModel)
        params = [p for s in model.students for p in s.parameters()]
        opt = torch.optim.SGD(params, lr=self.config.lr, momentum=0.9, weight_decay=1e-3)
        gen = torch.Generator().manual_seed(self.config.seed)
        cfg = self.config
        selector = (
            EpochSelector(self, model, cfg.epochs, cfg.validate_every, cfg.patience)
            if cfg.epoch_selection == "synthetic"
            else None
        )
        model.train()
        for epoch in range(self.config.epochs):
            order = torch.randperm(len(images), generator=gen)
            total = 0.0
            for sl in batches(len(images), self.config.batch_size):
                batch = self.training_batch(images, order[sl])
                teacher, students = model.features(batch)
                loss = sum((stfpm_loss(teacher, s) for s in students), torch.zeros(()))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(batch)
            progress(
                f"stfpm: epoch (loss {total / len(images):.4f})", epoch + 1, self.config.epochs
            )
            if selector is not None and selector.after_epoch(epoch + 1):
                break
        if selector is not None:
            selector.finish()
        model.eval()


DETECTOR = StfpmDetector
