"""Label-free validation: synthetic defects painted onto held-out normal images.

A new line has normal images only, so choices a detector leaves open (which image-score
reduction to use, when to stop training) cannot be made on real defects without tuning on the
test set. This module paints the synthetic line's defect kinds (scratch, crack, hole, stain;
:func:`inspection.data.synthetic.paint_defect`) onto the *validation normals* the engine holds
out anyway, and picks the choice that separates painted from clean copies best: image AUROC
for the score mode (:func:`select_score_mode`); the mean of image and pixel AUROC for the
training epoch (:class:`EpochSelector`). Nothing here sees a real defect or a test label.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from inspection.data.synthetic import PAINTABLE_TYPES, paint_defect
from inspection.detectors.base import Detector, ProgressFn, no_progress
from inspection.evaluation import _auroc, pixel_auroc

logger = logging.getLogger(__name__)

#: Label of the validation set in model metadata.
VALIDATION = "synthetic defects (scratch/crack/hole/stain) painted onto held-out normal images"


def synthetic_defects(images: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One painted defect per image, kinds in rotation: images (N, H, W, 3) uint8, masks (N, H, W)."""
    rng = np.random.default_rng(seed)
    out = np.empty_like(images)
    masks = np.zeros(images.shape[:3], np.uint8)
    for i, image in enumerate(images):
        kind = PAINTABLE_TYPES[i % len(PAINTABLE_TYPES)]
        out[i], masks[i] = paint_defect(image, kind, rng)
    return out, masks


#: Kinds :func:`paint_subtle` draws. Unlike :data:`PAINTABLE_TYPES` (saturated colours that
#: every detector finds), these change brightness by a fraction of the part's own grey level or
#: move its own texture, at scales from a few pixels to a fifth of the part.
SUBTLE_TYPES: tuple[str, ...] = ("thin_crack", "faint_stain", "scratch", "missing", "speck")
#: Label of the subtle validation set in model metadata.
SUBTLE_VALIDATION = (
    "subtle synthetic defects (thin cracks, faint stains, scratches, missing material, specks; "
    "contrast relative to the part, a few pixels to a fifth of the image) painted onto held-out "
    "normal images"
)


def paint_subtle(
    image: np.ndarray, kind: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Paint one low-contrast defect of ``kind`` (:data:`SUBTLE_TYPES`) onto a square image.

    ``image`` (S, S, 3) uint8; returns the painted copy and its (S, S) uint8 mask. Placed
    anywhere but the outer eighth of the image. Brightness changes are multiplicative (a
    fraction of the local grey level, so they read the same on dark and bright parts); the
    missing-material kind replaces a region with texture from elsewhere in the same image,
    blurred, so no new colour appears.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1]:
        raise ValueError(f"expected a square (S, S, 3) image, got shape {image.shape}")
    size = image.shape[0]
    rgb = image.astype(np.float32)
    mask = np.zeros((size, size), np.uint8)
    lo, hi = size // 8, size - size // 8
    x0, y0 = (int(v) for v in rng.integers(lo, hi, 2))
    px = max(1, size // 256)  # one "pixel" of a 256 px image
    if kind == "thin_crack":
        pts = [(float(x0), float(y0))]
        heading = rng.uniform(0, 2 * math.pi)
        step = size * rng.uniform(0.008, 0.015)
        for _ in range(int(rng.integers(6, 30))):
            heading += rng.normal(0, 0.5)
            x, y = pts[-1]
            pts.append((x + step * math.cos(heading), y + step * math.sin(heading)))
        cv2.polylines(mask, [np.array(pts, np.int32).reshape(-1, 1, 2)], False, 1, px)
        rgb[mask > 0] *= rng.uniform(0.45, 0.75)
    elif kind == "faint_stain":
        blob = np.zeros((size, size), np.float32)
        r = rng.uniform(0.03, 0.2) * size
        axes = (max(2, int(r)), max(2, int(r * rng.uniform(0.4, 1.0))))
        cv2.ellipse(blob, (x0, y0), axes, rng.uniform(0, 180), 0, 360, 1.0, -1)
        blob = cv2.GaussianBlur(blob, (0, 0), max(1.0, r / 4))
        factor = 1.0 + rng.choice([-1.0, 1.0]) * rng.uniform(0.15, 0.35)
        rgb *= (1.0 + (factor - 1.0) * blob)[..., None]
        mask = (blob > 0.3).astype(np.uint8)
    elif kind == "scratch":
        angle = rng.uniform(0, math.pi)
        length = rng.uniform(0.05, 0.3) * size
        dx, dy = math.cos(angle) * length / 2, math.sin(angle) * length / 2
        cv2.line(mask, (int(x0 - dx), int(y0 - dy)), (int(x0 + dx), int(y0 + dy)), 1, px)
        factor = rng.uniform(1.3, 1.6) if rng.random() < 0.5 else rng.uniform(0.5, 0.75)
        rgb[mask > 0] *= factor
    elif kind == "missing":
        r = max(3, int(rng.uniform(0.02, 0.1) * size))
        cv2.ellipse(
            mask,
            (x0, y0),
            (r, max(2, int(r * rng.uniform(0.5, 1.0)))),
            rng.uniform(0, 180),
            0,
            360,
            1,
            -1,
        )
        sx, sy = (int(v) for v in rng.integers(lo, hi, 2))
        shift = np.array([[1, 0, sx - x0], [0, 1, sy - y0]], np.float32)
        donor = cv2.warpAffine(rgb, shift, (size, size), borderMode=cv2.BORDER_REFLECT)
        donor = cv2.GaussianBlur(donor, (0, 0), max(1.0, r / 3))
        rgb[mask > 0] = donor[mask > 0] * rng.uniform(0.8, 1.1)
    elif kind == "speck":
        for _ in range(int(rng.integers(1, 4))):
            cx = int(np.clip(x0 + rng.normal(0, size * 0.03), lo, hi))
            cy = int(np.clip(y0 + rng.normal(0, size * 0.03), lo, hi))
            cv2.circle(mask, (cx, cy), int(rng.integers(1, 4)) * px, 1, -1)
        rgb[mask > 0] *= rng.uniform(1.4, 1.8) if rng.random() < 0.5 else rng.uniform(0.3, 0.6)
    else:
        raise ValueError(f"cannot paint {kind!r}; expected one of {SUBTLE_TYPES}")
    return np.clip(rgb, 0, 255).astype(np.uint8), mask


def subtle_defects(
    images: np.ndarray, copies: int = 2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``copies`` painted versions of every image, kinds in rotation.

    Returns images (copies * N, S, S, 3) uint8 and masks (copies * N, S, S) uint8.
    """
    rng = np.random.default_rng(seed)
    n = len(images)
    out = np.empty((copies * n, *images.shape[1:]), np.uint8)
    masks = np.zeros((copies * n, *images.shape[1:3]), np.uint8)
    for j in range(copies * n):
        kind = SUBTLE_TYPES[j % len(SUBTLE_TYPES)]
        out[j], masks[j] = paint_subtle(images[j % n], kind, rng)
    return out, masks


def select_score_mode(
    detector: Detector, normals: np.ndarray, seed: int = 0, progress: ProgressFn = no_progress
) -> dict[str, Any]:
    """Set the fitted ``detector``'s best image-score mode on synthetic defects; return the record.

    ``normals`` (N, H, W, 3) uint8 are held-out normal images (never the fit set: a model scores
    its own training images too well). Each of ``detector.score_modes`` is scored by image AUROC
    of clean versus painted copies; ties keep the earlier mode (the paper's comes first).
    Returns ``{"validation", "n_images", "auroc": {mode: value}, "chosen", "seconds"}``.
    """
    modes = detector.score_modes
    if len(modes) < 2:
        raise ValueError(f"{detector.key}: no score modes to choose from")
    start = time.perf_counter()
    painted, _ = synthetic_defects(normals, seed)
    images = np.concatenate([normals, painted])
    target = torch.cat([torch.zeros(len(normals)), torch.ones(len(painted))]).long()
    auroc: dict[str, float] = {}
    for k, mode in enumerate(modes):
        detector.set_score_mode(mode)
        scores = detector.predict(images).score
        value = _auroc(torch.from_numpy(scores), target)
        auroc[mode] = float("nan") if value is None else value
        progress(f"{detector.key}: score mode {mode} on synthetic defects", k + 1, len(modes))
    chosen = max(modes, key=lambda m: (auroc[m], -modes.index(m)))
    detector.set_score_mode(chosen)
    logger.info(
        "%s: score mode %s chosen on synthetic defects (image AUROC %s)",
        detector.key,
        chosen,
        ", ".join(f"{m} {v:.3f}" for m, v in auroc.items()),
    )
    return {
        "validation": VALIDATION,
        "n_images": len(images),
        "auroc": auroc,
        "chosen": chosen,
        "seconds": round(time.perf_counter() - start, 2),
    }


def make_validator(
    detector: Detector, normals: np.ndarray, seed: int = 0, pixel_stride: int = 4
) -> Callable[[], dict[str, float]]:
    """A function scoring ``detector`` as it stands on ``normals`` and painted copies of them.

    ``normals`` (N, H, W, 3) uint8 are held-out normal images. The function returns
    ``{"image_auroc", "pixel_auroc", "score"}`` (``score`` = their mean; pixel AUROC on every
    ``pixel_stride``-th pixel in each direction, clean images' pixels all negative). It runs the
    model in eval mode and leaves it there.
    """
    painted, masks = synthetic_defects(normals, seed)
    images = np.concatenate([normals, painted])
    target = torch.cat([torch.zeros(len(normals)), torch.ones(len(painted))]).long()
    s = pixel_stride
    pixel_target = np.concatenate([np.zeros_like(masks), masks])[:, ::s, ::s] > 0

    def validate() -> dict[str, float]:
        out = detector.predict_unchecked(images)
        image = _auroc(torch.from_numpy(out.score), target)
        pixel = pixel_auroc(out.anomaly_map[:, 0, ::s, ::s], pixel_target)
        image_v = float("nan") if image is None else image
        pixel_v = float("nan") if pixel is None else pixel
        return {"image_auroc": image_v, "pixel_auroc": pixel_v, "score": (image_v + pixel_v) / 2}

    return validate


class EpochSelector:
    """Keeps the weights of the training epoch that best separates painted defects.

    A training loop calls :meth:`after_epoch` after each epoch and stops when it returns True,
    then :meth:`finish`, which loads the best weights into ``module`` and records the history
    in ``detector.epoch_selection``. Validation runs every ``every`` epochs and after the last
    (``detector.validator``; without one, nothing happens and the last epoch stays). With
    ``patience`` > 0, training stops after that many validations without improvement. Ties
    keep the earlier epoch.
    """

    def __init__(
        self, detector: Detector, module: nn.Module, epochs: int, every: int, patience: int = 0
    ) -> None:
        self.detector = detector
        self.module = module
        self.epochs = epochs
        self.every = max(1, every)
        self.patience = patience
        self.history: list[dict[str, float]] = []
        self.best_score = float("-inf")
        self.best_epoch = 0
        self._best_state: dict[str, torch.Tensor] | None = None
        self._since_best = 0
        self._val_seconds = 0.0

    def after_epoch(self, epoch: int) -> bool:
        """Validate after ``epoch`` (1-based) when due; True when training should stop."""
        validate = self.detector.validator
        if validate is None or (epoch % self.every and epoch != self.epochs):
            return False
        was_training = self.module.training
        start = time.perf_counter()
        metrics = validate()
        self._val_seconds += time.perf_counter() - start
        self.module.train(was_training)
        self.history.append({"epoch": epoch, **metrics})
        score = metrics["score"]
        if score > self.best_score:
            self.best_score, self.best_epoch, self._since_best = score, epoch, 0
            self._best_state = copy.deepcopy(self.module.state_dict())
        else:
            self._since_best += 1
        logger.info(
            "%s: epoch %d on synthetic defects: image AUROC %.3f, pixel AUROC %.3f (best epoch %d)",
            self.detector.key,
            epoch,
            metrics["image_auroc"],
            metrics["pixel_auroc"],
            self.best_epoch,
        )
        return bool(self.patience) and self._since_best >= self.patience

    def finish(self) -> None:
        """Load the best epoch's weights (if validation ran) and record the selection."""
        if self._best_state is None:
            return
        self.module.load_state_dict(self._best_state)
        self.detector.epoch_selection = {
            "validation": VALIDATION,
            "criterion": "mean of image and pixel AUROC",
            "chosen_epoch": self.best_epoch,
            "epochs_run": int(self.history[-1]["epoch"]),
            "history": self.history,
            "validation_seconds": round(self._val_seconds, 2),
        }
