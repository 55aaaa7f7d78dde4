"""Patch-level supervised refinement of PaDiM from operator labels.

PaDiM scores every feature-map position by its Mahalanobis distance to the normal Gaussian of
that position. Operators' labels say which *images* are defective, and PaDiM's own map says
where: the ``top_k`` most anomalous positions of each labelled defect are taken as defect
patches, and **every** position of normal images (held-out base normals and the operators'
confirmed normals / false positives) as normal patches. A logistic regression on each patch's
PaDiM embedding (the random channel subset, 120 values for Lite0) and its Mahalanobis distance
is then one 1x1 convolution over the embedding map; its logit map is upsampled and smoothed
exactly like PaDiM's distance map, and the image score is its maximum.

Why patches: one labelled image gives thousands of normal patches, so a few confirmed false
positives teach the model what *production* normal surface looks like everywhere, and defect
patches teach what defects look like wherever they appear (PaDiM's Gaussians are per position).
The distance is an input, so the one-class evidence stays in the score; a *guard* can add that
an image whose one-class score is far above held-out normals stays anomalous.

The whole thing is a graph (:class:`PatchRefinedPadim`) exported in place of PaDiM's, so the
station runs it unchanged; its anomaly map is the refined map (pixel threshold recalibrated).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import numpy as np
import torch
from torch import nn

from inspection.detectors.base import Detector, ProgressFn, batches, no_progress
from inspection.loop.refiner import ArrayRows, SavedParams

logger = logging.getLogger(__name__)


@dataclass
class PatchMaps(ArrayRows):
    """PaDiM embeddings and distances of a batch of images.

    Attributes:
        emb: (N, C, H, W) float32 embeddings (the model's channel subset).
        dist: (N, H, W) float32 Mahalanobis distances (before upsampling and smoothing).
    """

    emb: np.ndarray
    dist: np.ndarray


def mahalanobis(emb: np.ndarray, mean: np.ndarray, inv_cov: np.ndarray) -> np.ndarray:
    """Distances (N, H, W) of embeddings (N, C, H, W) to per-position Gaussians.

    ``mean``: (C, H*W); ``inv_cov``: (H*W, C, C). NumPy per image (fast on any CPU).
    """
    n, c, h, w = emb.shape
    out = np.zeros((n, h * w), np.float32)
    mean_t = mean.T.astype(np.float32)  # (P, C)
    for i in range(n):
        delta = emb[i].reshape(c, -1).T - mean_t  # (P, C)
        q = (np.matmul(delta[:, None, :], inv_cov)[:, 0, :] * delta).sum(axis=1)
        out[i] = np.sqrt(np.clip(q, 0.0, None))
    return out.reshape(n, h, w)


class _EmbeddingGraph(nn.Module):
    """PaDiM's embedding as a graph: raw [0, 1] RGB -> (N, C, H, W) (normalisation inside)."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        from inspection.detectors.base import Normalize

        self.normalize = Normalize.for_config(detector.config)
        self.padim: Any = detector.torch_model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        padim = self.padim
        out: torch.Tensor = padim.generate_embedding(padim.feature_extractor(self.normalize(image)))
        return out


def _openvino_embedder(detector: Detector) -> Any:
    """A compiled OpenVINO embedding graph, cached on the detector object."""
    cached = detector.__dict__.get("_loop_ov_embedder")
    if cached is not None:
        return cached
    import openvino as ov

    from inspection.ov_export import to_openvino

    size = detector.config.image_size
    with torch.no_grad():
        model = to_openvino(_EmbeddingGraph(detector).eval(), torch.zeros(1, 3, size, size))
    model.reshape({0: ov.PartialShape([-1, 3, size, size])})
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    detector.__dict__["_loop_ov_embedder"] = compiled
    return compiled


@torch.no_grad()
def padim_maps(
    detector: Detector,
    images: np.ndarray,
    progress: ProgressFn = no_progress,
    backend: str = "openvino",
) -> PatchMaps:
    """Embeddings and distances of (N, S, S, 3) uint8 images under a fitted PaDiM detector.

    ``backend``: ``openvino`` (the backbone through OpenVINO on CPU, several times faster;
    same numbers to float precision) or ``torch``. Distances are computed with NumPy.
    """
    from inspection.runtime import to_input

    model: Any = detector.torch_model
    model.eval()
    mean = model.gaussian.mean.numpy()
    inv_cov = model.gaussian.inv_covariance.numpy()
    embs, dists = [], []
    embedder = _openvino_embedder(detector) if backend == "openvino" and len(images) else None
    for sl in batches(len(images), detector.config.batch_size):
        if embedder is not None:
            e = np.asarray(embedder(to_input(images[sl]))[0], dtype=np.float32)
        else:
            x = detector._prepare(images[sl])
            e = model.generate_embedding(model.feature_extractor(x)).float().numpy()
        embs.append(e)
        dists.append(mahalanobis(e, mean, inv_cov))
        progress("padim: patch features", sl.stop, len(images))
    if not embs:
        c = int(model.n_features)
        return PatchMaps(np.zeros((0, c, 1, 1), np.float32), np.zeros((0, 1, 1), np.float32))
    return PatchMaps(np.concatenate(embs), np.concatenate(dists))


def _rows(maps: PatchMaps, index: np.ndarray | None = None) -> np.ndarray:
    """(rows, C + 1) patch features: embedding values and the distance, per position."""
    n, c, h, w = maps.emb.shape
    x = np.concatenate([maps.emb, maps.dist[:, None]], axis=1)  # (N, C+1, H, W)
    x = x.transpose(0, 2, 3, 1).reshape(n * h * w, c + 1)
    return x if index is None else x[index]


def _top_rows(maps: PatchMaps, k: int) -> np.ndarray:
    """The ``k`` most anomalous positions of each image, as (N*k, C + 1) rows."""
    n, _, h, w = maps.emb.shape
    flat = maps.dist.reshape(n, -1)
    k = min(k, h * w)
    top = np.argpartition(flat, h * w - k, axis=1)[:, -k:]
    rows = top + (np.arange(n) * h * w)[:, None]
    return _rows(maps, rows.reshape(-1))


@dataclass
class PatchRefinerParams(SavedParams):
    """A fitted patch refiner.

    Attributes:
        feat_mean / feat_std: (C + 1,) standardisation of (embedding..., distance).
        coef: (C + 1,) logistic-regression weights; intercept: its bias.
        top_k: defect patches taken per labelled defect image.
        c: inverse L2 strength used.
        guard: one-class image score above which an image is always anomalous (None: off).
        guard_scale: one-class score units per refined-score unit for the guard.
        threshold: image threshold on the refined score (set by the caller).
        n_defect_patches / n_normal_patches: training set size.
    """

    stem: ClassVar[str] = "patch_refiner"

    feat_mean: np.ndarray
    feat_std: np.ndarray
    coef: np.ndarray
    intercept: float
    top_k: int
    c: float
    guard: float | None
    guard_scale: float
    threshold: float
    n_defect_patches: int
    n_normal_patches: int

    def logit_maps(self, maps: PatchMaps) -> np.ndarray:
        """(N, H, W) per-position logits (before upsampling and smoothing)."""
        w_std = self.coef / self.feat_std
        bias = self.intercept - float((self.feat_mean * w_std).sum())
        z = np.einsum("nchw,c->nhw", maps.emb, w_std[:-1]) + maps.dist * w_std[-1] + bias
        return z.astype(np.float32)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description for job records and ``model.json``."""
        return {
            "kind": "patch",
            "c": self.c,
            "top_k": self.top_k,
            "distance_weight": round(float(self.coef[-1] / self.feat_std[-1]), 4),
            "defect_patches": self.n_defect_patches,
            "normal_patches": self.n_normal_patches,
            "guard": self.guard,
            "threshold": self.threshold,
        }


def fit_patch_refiner(
    defects: PatchMaps,
    normals: PatchMaps,
    *,
    top_k: int = 8,
    c: float = 1.0,
    max_normal_patches: int = 400_000,
    seed: int = 0,
) -> PatchRefinerParams:
    """Logistic regression: top-``k`` patches of defects vs every patch of normal images.

    Classes are balanced by weight; normal patches beyond ``max_normal_patches`` are subsampled
    at random (seeded) to bound memory and time.
    """
    from sklearn.linear_model import LogisticRegression

    pos = _top_rows(defects, top_k)
    n_norm_rows = len(normals) * int(np.prod(normals.dist.shape[1:]))
    rng = np.random.default_rng(seed)
    index = None
    if n_norm_rows > max_normal_patches:
        index = np.sort(rng.choice(n_norm_rows, max_normal_patches, replace=False))
    neg = _rows(normals, index)
    x = np.concatenate([pos, neg]).astype(np.float32)
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    std = np.where(std > 1e-12, std, 1.0)
    xs = ((x - mean) / std).astype(np.float32)
    lr = LogisticRegression(C=c, class_weight="balanced", max_iter=500, tol=1e-4)
    lr.fit(xs, y)
    logger.info(
        "patch refiner: %d defect patches (%d images) vs %d normal patches (%d images), C=%g",
        len(pos),
        len(defects),
        len(neg),
        len(normals),
        c,
    )
    return PatchRefinerParams(
        feat_mean=mean,
        feat_std=std,
        coef=lr.coef_[0].astype(np.float64),
        intercept=float(lr.intercept_[0]),
        top_k=top_k,
        c=float(c),
        guard=None,
        guard_scale=1.0,
        threshold=0.0,
        n_defect_patches=len(pos),
        n_normal_patches=len(neg),
    )


class PatchRefinedPadim(nn.Module):
    """Deployable graph: raw [0, 1] RGB -> (refined score (N,), refined map (N, 1, S, S)).

    Args:
        detector: the fitted PaDiM detector (its feature extractor, Gaussian, map generator).
        params: the fitted patch refiner.
    """

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    guard: torch.Tensor
    threshold: torch.Tensor
    guard_scale: torch.Tensor

    def __init__(self, detector: Detector, params: PatchRefinerParams) -> None:
        super().__init__()
        from inspection.detectors.base import Normalize

        cfg = detector.config
        self.normalize = Normalize.for_config(cfg)
        self.padim: Any = detector.torch_model
        w_std = params.coef / params.feat_std
        bias = params.intercept - float((params.feat_mean * w_std).sum())
        self.register_buffer("weight", torch.tensor(w_std, dtype=torch.float32))
        self.register_buffer("bias", torch.tensor(bias, dtype=torch.float32))
        self.use_guard = params.guard is not None
        self.register_buffer("guard", torch.tensor(params.guard or 0.0, dtype=torch.float32))
        self.register_buffer("threshold", torch.tensor(params.threshold, dtype=torch.float32))
        self.register_buffer("guard_scale", torch.tensor(params.guard_scale, dtype=torch.float32))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        padim = self.padim
        size = image.shape[-2:]
        emb = padim.generate_embedding(padim.feature_extractor(self.normalize(image)))
        gen = padim.anomaly_map_generator
        dist = gen.compute_distance(
            embedding=emb, stats=[padim.gaussian.mean, padim.gaussian.inv_covariance]
        )  # (N, 1, H, W)
        c = emb.shape[1]
        logit = (emb * self.weight[:c].view(1, c, 1, 1)).sum(dim=1, keepdim=True)
        logit = logit + dist * self.weight[c] + self.bias
        amap = gen.smooth_anomaly_map(gen.up_sample(logit, size))
        score = amap.amax(dim=(-2, -1)).reshape(-1)
        if self.use_guard:
            one_class = gen.smooth_anomaly_map(gen.up_sample(dist, size)).amax(dim=(-2, -1))
            guard = self.threshold + (one_class.reshape(-1) - self.guard) / self.guard_scale
            score = torch.maximum(score, guard)
        return score, amap


def refined_maps(
    detector: Detector, params: PatchRefinerParams, maps: PatchMaps, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(scores (N,), maps (N, 1, S, S)) the exported graph computes, from precomputed maps."""
    gen: Any = cast(Any, detector.torch_model).anomaly_map_generator
    z = torch.from_numpy(params.logit_maps(maps))[:, None]
    with torch.no_grad():
        amap = gen.smooth_anomaly_map(gen.up_sample(z, (size, size)))
        score = amap.amax(dim=(-2, -1)).reshape(-1)
        if params.guard is not None:
            d = torch.from_numpy(maps.dist)[:, None]
            one = gen.smooth_anomaly_map(gen.up_sample(d, (size, size))).amax(dim=(-2, -1))
            guard = params.threshold + (one.reshape(-1) - params.guard) / params.guard_scale
            score = torch.maximum(score, guard)
    return score.numpy(), amap.numpy()


def one_class_scores(detector: Detector, maps: PatchMaps, size: int) -> np.ndarray:
    """PaDiM image scores (max of the upsampled, smoothed distance map) from distances."""
    gen: Any = cast(Any, detector.torch_model).anomaly_map_generator
    with torch.no_grad():
        d = torch.from_numpy(maps.dist)[:, None]
        out = gen.smooth_anomaly_map(gen.up_sample(d, (size, size))).amax(dim=(-2, -1))
    return out.reshape(-1).numpy()
