"""Evaluation of detectors: image AUROC, pixel AUROC, AUPRO, F1 at the deployed threshold.

AUROCs come from torchmetrics, AUPRO (FPR limit 0.3) from anomalib's implementation, so the
numbers are computed the way the field computes them. Maps and masks of a stretched test set are
compared at the resolution they are given in (the protocols fix 256 x 256); those of a padded
(letterboxed) set only over each image's valid box, resized to ``COMPARE_SIZE`` x
``COMPARE_SIZE`` (:func:`comparison_pixels`), so the padding never counts and every image
weighs the same as it would stretched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc, binary_f1_score, binary_roc

from inspection.data.imageset import GOOD, ImageSet

AUPRO_FPR_LIMIT = 0.3
#: Side of the square that padded sets' maps and masks are compared at (the mt-exp protocol's).
COMPARE_SIZE = 256


@dataclass(frozen=True)
class Calibration:
    """Thresholds and score scaling chosen from normal validation images only.

    ``image_threshold`` / ``pixel_threshold`` are raw-score thresholds; the normalised score maps
    ``image_threshold`` to 0.5 and spreads the validation range over 0..1 (anomalib's min-max).
    """

    image_threshold: float
    pixel_threshold: float
    score_min: float
    score_max: float
    map_min: float
    map_max: float
    quantile: float

    def normalize_score(self, raw: np.ndarray | float) -> np.ndarray:
        """Raw image score(s) -> [0, 1] with the threshold at 0.5."""
        span = max(self.score_max - self.score_min, 1e-12)
        return np.clip(
            (np.asarray(raw, dtype=np.float64) - self.image_threshold) / span + 0.5, 0.0, 1.0
        )

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return cls(**{k: float(data[k]) for k in cls.__dataclass_fields__})


def calibrate(scores: np.ndarray, maps: np.ndarray, quantile: float = 0.99) -> Calibration:
    """Thresholds at the ``quantile`` of normal validation image scores and pixel values.

    Args:
        scores: (N,) raw scores of normal validation images.
        maps: (N, 1, H, W) or (N, H, W) anomaly maps of the same images.
        quantile: fraction of normal parts that should pass (1 - target false-reject rate).
    """
    if len(scores) == 0:
        raise ValueError("calibration needs at least one normal validation image")
    flat = maps.reshape(-1)
    stride = max(1, flat.size // 5_000_000)  # a uniform subsample bounds memory for big sets
    return Calibration(
        image_threshold=float(np.quantile(scores, quantile)),
        pixel_threshold=float(np.quantile(flat[::stride], quantile)),
        score_min=float(scores.min()),
        score_max=float(scores.max()),
        map_min=float(flat.min()),
        map_max=float(flat.max()),
        quantile=quantile,
    )


def unit_range(values: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Min-max rescale to [0, 1] (order preserved), as float32 torch.

    torchmetrics treats predictions outside [0, 1] as logits and squashes them with a sigmoid,
    which saturates raw anomaly scores (hundreds for PaDiM) into ties; rank metrics must see
    the values rescaled instead.
    """
    t = torch.as_tensor(values, dtype=torch.float32)
    lo, hi = t.min(), t.max()
    return (t - lo) / (hi - lo) if hi > lo else torch.zeros_like(t)


def _auroc(scores: torch.Tensor, target: torch.Tensor) -> float | None:
    if target.min() == target.max():
        return None  # undefined with one class
    return float(binary_auroc(unit_range(scores), target, thresholds=None))


def pixel_auroc(maps: np.ndarray, masks: np.ndarray) -> float | None:
    """Pixel AUROC over every pixel of every image (maps (N,[1,]H,W), masks (N,H,W) bool)."""
    preds = unit_range(maps.reshape(-1))
    target = torch.from_numpy(np.ascontiguousarray(masks).reshape(-1).astype(np.int64))
    return _auroc(preds, target)


def aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = AUPRO_FPR_LIMIT) -> float | None:
    """Area under the per-region-overlap curve up to ``fpr_limit``, normalised to [0, 1]."""
    if not masks.any():
        return None
    from anomalib.metrics.aupro import _AUPRO

    metric = _AUPRO(fpr_limit=fpr_limit)
    metric.update(unit_range(maps.reshape(masks.shape)), torch.from_numpy(masks.astype(np.int64)))
    return float(metric.compute())


def pro_curve(
    maps: np.ndarray, masks: np.ndarray, fpr_limit: float = AUPRO_FPR_LIMIT
) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, pro) points of the PRO curve up to ``fpr_limit`` for plotting."""
    from anomalib.metrics.aupro import _AUPRO

    metric = _AUPRO(fpr_limit=fpr_limit)
    metric.update(unit_range(maps.reshape(masks.shape)), torch.from_numpy(masks.astype(np.int64)))
    fpr, pro = metric._compute()
    return fpr.numpy(), pro.numpy()


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of the image-level ROC."""
    fpr, tpr, _ = binary_roc(unit_range(scores), torch.from_numpy(labels))
    return fpr.numpy(), tpr.numpy()


def image_metrics(
    scores: np.ndarray, labels: np.ndarray, threshold: float
) -> dict[str, float | None]:
    """Image AUROC and F1 of ``score > threshold`` against labels (1 anomalous)."""
    s = torch.from_numpy(scores.astype(np.float32))
    y = torch.from_numpy(labels.astype(np.int64))
    f1 = float(binary_f1_score((s > threshold).long(), y)) if y.sum() > 0 else None
    return {"image_auroc": _auroc(s, y), "image_f1": f1}


def comparison_pixels(
    maps: np.ndarray, test: ImageSet, size: int = COMPARE_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """(maps (N, H, W) float32, masks (N, H, W) bool) to compare pixel metrics on.

    Stretched sets: ``maps`` reshaped to the masks, the masks themselves (no copy). Padded
    sets: each image's valid box cut from its map (bilinear) and mask (nearest) and resized
    to ``size`` x ``size``, i.e. the original image's pixels at the comparison size.

    Args:
        maps: (N, 1, S, S) or (N, S, S) anomaly maps at the masks' resolution.
        test: the set the maps belong to.
    """
    maps = maps.reshape(test.masks.shape)
    if test.fit != "pad":
        return maps, test.masks
    out_maps = np.empty((len(test), size, size), np.float32)
    out_masks = np.empty((len(test), size, size), bool)
    for i in range(len(test)):
        x, y, w, h = test.box(i)
        out_maps[i] = cv2.resize(
            np.ascontiguousarray(maps[i, y : y + h, x : x + w], dtype=np.float32),
            (size, size),
            interpolation=cv2.INTER_LINEAR,
        )
        mask = np.ascontiguousarray(test.masks[i, y : y + h, x : x + w], dtype=np.uint8)
        out_masks[i] = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST) > 0
    return out_maps, out_masks


def evaluate(
    scores: np.ndarray,
    maps: np.ndarray,
    test: ImageSet,
    calibration: Calibration,
    per_type: bool = True,
    with_aupro: bool = True,
) -> dict[str, Any]:
    """Overall and per-defect-type metrics; each type is scored against all normal images.

    Args:
        scores: (N,) raw image scores for ``test``.
        maps: (N, 1, H, W) raw anomaly maps at the masks' resolution. Pixel metrics of a padded
            ``test`` count each image's valid box only (:func:`comparison_pixels`).
    """
    maps, masks = comparison_pixels(maps, test)
    labels = test.labels

    def block(idx: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = image_metrics(scores[idx], labels[idx], calibration.image_threshold)
        out["pixel_auroc"] = pixel_auroc(maps[idx], masks[idx])
        out["aupro"] = aupro(maps[idx], masks[idx]) if with_aupro else None
        out["n_images"] = len(idx)
        return out

    result = block(np.arange(len(test)))
    if per_type:
        normal = np.flatnonzero(labels == 0)
        result["per_type"] = {}
        for kind in sorted(set(test.defect_types) - {GOOD}):
            idx = np.concatenate([normal, np.flatnonzero(np.array(test.defect_types) == kind)])
            result["per_type"][kind] = block(idx)
    return result
