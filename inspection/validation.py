"""Label-free validation: synthetic defects painted onto held-out normal images.

A new line has normal images only, so choices a detector leaves open (which image-score
reduction to use) cannot be made on real defects without tuning on the test set. This module
paints the synthetic line's defect kinds (scratch, crack, hole, stain;
:func:`inspection.data.synthetic.paint_defect`) onto the *validation normals* the engine holds
out anyway, and picks the choice that separates painted from clean copies best (image AUROC).
Nothing here sees a real defect or a test label.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from inspection.data.synthetic import PAINTABLE_TYPES, paint_defect
from inspection.detectors.base import Detector, ProgressFn, no_progress
from inspection.evaluation import _auroc

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
