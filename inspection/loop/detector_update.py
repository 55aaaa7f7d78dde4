"""Adding operator-confirmed normals to a fitted one-class detector.

PaDiM's fit is closed form: per feature-map position, the mean and the (unbiased) covariance of
the normal embeddings, plus ``0.01 I`` (+ ``1e-5 I``) before inversion (anomalib's
``MultiVariateGaussian``). Those are sufficient statistics, so new normals can be merged into a
fitted model exactly, without the images it was first trained on: the stored inverse covariance
is inverted back (float64), the regularisation removed, the scatter matrices of old and new
samples combined (Chan et al.'s pairwise update), and the result re-regularised and inverted.
Up to float rounding this equals refitting PaDiM on old + new images (see the tests).

Other detectors have no such update: the loop refits them (:mod:`inspection.loop.candidate`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from inspection.detectors.base import Detector, ProgressFn, batches, no_progress

logger = logging.getLogger(__name__)

#: Diagonal terms anomalib adds to each covariance before inverting it.
PADIM_COV_REG = 0.01
PADIM_STABILIZER = 1e-5
#: Feature-map positions processed per chunk (bounds float64 memory to ~60 MB at 120 features).
_CHUNK = 512


def supports_update(detector: Detector) -> bool:
    """Whether :func:`add_normals` can update ``detector`` in closed form."""
    return detector.key == "padim"


@torch.no_grad()
def padim_embeddings(detector: Detector, images: np.ndarray) -> torch.Tensor:
    """PaDiM embeddings (N, C, H*W) float64 of (N, S, S, 3) uint8 images."""
    model: Any = detector.torch_model
    model.eval()
    parts = []
    for sl in batches(len(images), detector.config.batch_size):
        x = detector._prepare(images[sl])
        emb = model.generate_embedding(model.feature_extractor(x))
        parts.append(emb.reshape(emb.shape[0], emb.shape[1], -1).double())
    return torch.cat(parts)


@torch.no_grad()
def add_normals(
    detector: Detector, n_fitted: int, images: np.ndarray, progress: ProgressFn = no_progress
) -> int:
    """Merge normal ``images`` into a fitted PaDiM ``detector`` fitted on ``n_fitted`` images.

    Args:
        detector: a fitted PaDiM detector (changed in place).
        n_fitted: how many images its Gaussian was estimated from (``model.json`` ``n_train``).
        images: (K, S, S, 3) uint8 new normal images at the detector's input size.

    Returns:
        The new number of images the model represents (``n_fitted + K``).

    Raises:
        ValueError: not a PaDiM detector, not fitted, or ``n_fitted < 2``.
    """
    if not supports_update(detector):
        raise ValueError(f"closed-form update supports padim only, not {detector.key}")
    if not detector.fitted:
        raise ValueError("add_normals needs a fitted detector")
    if n_fitted < 2:
        raise ValueError(f"n_fitted must be at least 2, got {n_fitted}")
    k = len(images)
    if k == 0:
        return n_fitted
    gaussian: Any = detector.torch_model.gaussian
    new = padim_embeddings(detector, images)  # (K, C, P)
    mean_a = gaussian.mean.double()  # (C, P)
    inv_cov = gaussian.inv_covariance  # (P, C, C) float32
    c, p = mean_a.shape
    eye = torch.eye(c, dtype=torch.float64)
    n_a, n = n_fitted, n_fitted + k
    mean_b = new.mean(dim=0)  # (C, P)
    mean_new = (n_a * mean_a + k * mean_b) / n
    out = torch.empty_like(inv_cov)
    for start in range(0, p, _CHUNK):
        sl = slice(start, min(start + _CHUNK, p))
        cov_a = torch.linalg.inv(inv_cov[sl].double()) - (PADIM_COV_REG + PADIM_STABILIZER) * eye
        scatter = (n_a - 1) * cov_a  # (P', C, C)
        centred = new[:, :, sl] - mean_b[None, :, sl]  # (K, C, P')
        scatter = scatter + torch.einsum("kcp,kdp->pcd", centred, centred)
        delta = (mean_a[:, sl] - mean_b[:, sl]).T  # (P', C)
        scatter = scatter + (n_a * k / n) * torch.einsum("pc,pd->pcd", delta, delta)
        cov = scatter / (n - 1) + PADIM_COV_REG * eye + PADIM_STABILIZER * eye
        out[sl] = torch.linalg.inv(cov).to(inv_cov.dtype)
        progress("padim: update", sl.stop, p)
    gaussian.inv_covariance = out
    gaussian.mean = mean_new.to(gaussian.mean.dtype)
    logger.info("padim: merged %d confirmed normals into a model of %d images", k, n_a)
    return n
