"""Supervised refinement of a one-class anomaly score from operator-labelled defects.

A one-class detector never sees a defect; operators' labels can teach it which anomalies
matter. The refiner is a logistic regression (scikit-learn, L2, strength chosen by stratified
cross-validation on the training labels) on a small descriptor of each image:

* ``score``: the one-class raw image score, standardised by held-out normal scores;
* ``map_mean`` / ``map_top``: the mean of the anomaly map and the mean of its top 1 % pixels,
  standardised the same way;
* ``pca``: the first ``components`` principal components (fitted on the training images) of
  pooled ImageNet backbone features of the whole input image (EfficientNet-Lite0 last stage,
  global average + max pooling, the typing features of :mod:`inspection.openset.features`).

Its logit is the refined raw score. A *guard* keeps the one-class detector in charge of
anomalies nobody labelled: an image whose one-class score is above ``guard`` (a high quantile of
held-out normal scores) scores at least ``threshold + (score - guard) / score_std``, i.e. it
is anomalous whatever the regression says.

Everything runs inside the exported OpenVINO graph (:class:`RefinedModel`): the station sees an
ordinary bundle whose score output is the refined score, and without labels the loop exports the
plain one-class detector instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Self, cast

import numpy as np
import torch
from torch import nn

from inspection.errors import ModelFileError

logger = logging.getLogger(__name__)

#: Fraction of anomaly-map pixels averaged into ``map_top``.
TOP_FRACTION = 0.01
SCALAR_FEATURES = ("score", "map_mean", "map_top")


def map_stats(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, mean of the top 1 % pixels) of anomaly maps (N, [1,] H, W) -> two (N,) arrays."""
    if len(maps) == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    flat = np.asarray(maps, dtype=np.float32).reshape(len(maps), -1)
    k = max(1, round(flat.shape[1] * TOP_FRACTION))
    top = np.partition(flat, flat.shape[1] - k, axis=1)[:, -k:]
    return flat.mean(axis=1), top.mean(axis=1)


@dataclass
class ArrayRows:
    """A batch held as arrays that share their first axis (one row per image): rows of every
    field are selected and joined at once. Subclasses are dataclasses of such arrays only."""

    def __len__(self) -> int:
        return len(getattr(self, fields(self)[0].name))

    def take(self, index: np.ndarray | list[int]) -> Self:
        """Rows ``index`` of every field."""
        idx = np.asarray(index, dtype=np.int64)
        return replace(self, **{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @classmethod
    def concat(cls, parts: Sequence[Self]) -> Self:
        """The rows of ``parts`` one after another, field by field."""
        joined = {f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)}
        return replace(parts[0], **joined)


@dataclass
class RefinerInputs(ArrayRows):
    """Per-image inputs of the refiner.

    Attributes:
        score: (N,) one-class raw image scores.
        map_mean: (N,) mean of each anomaly map.
        map_top: (N,) mean of the top 1 % of each anomaly map.
        pooled: (N, D) pooled backbone features of the whole image.
    """

    score: np.ndarray
    map_mean: np.ndarray
    map_top: np.ndarray
    pooled: np.ndarray

    @staticmethod
    def from_outputs(scores: np.ndarray, maps: np.ndarray, pooled: np.ndarray) -> RefinerInputs:
        mean, top = map_stats(maps)
        return RefinerInputs(
            np.asarray(scores, np.float32), mean, top, np.asarray(pooled, np.float32)
        )


class SavedParams:
    """Mixin of a fitted dataclass of arrays and scalars saved as ``<stem>.npz`` +
    ``<stem>.json`` (arrays in the one, the rest in the other); ``stem`` names the files."""

    stem: ClassVar[str]

    def save(self, directory: str | Path) -> Path:
        """Write ``<stem>.npz`` + ``<stem>.json`` into ``directory``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        fields = asdict(cast(Any, self))
        arrays = {k: v for k, v in fields.items() if isinstance(v, np.ndarray)}
        scalars = {k: v for k, v in fields.items() if not isinstance(v, np.ndarray)}
        np.savez(out / f"{self.stem}.npz", **cast(dict[str, Any], arrays))
        (out / f"{self.stem}.json").write_text(json.dumps(scalars, indent=2) + "\n")
        return out

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """The parameters :meth:`save` wrote; :class:`ModelFileError` when unreadable."""
        path = Path(directory)
        try:
            scalars = json.loads((path / f"{cls.stem}.json").read_text())
            with np.load(path / f"{cls.stem}.npz") as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, json.JSONDecodeError, ValueError) as exc:
            raise ModelFileError(
                f"cannot read {cls.stem.replace('_', ' ')} in {path}: {exc}"
            ) from exc
        return cls(**{**arrays, **scalars})


@dataclass
class RefinerParams(SavedParams):
    """A fitted refiner: standardisation, projection, regression weights, guard, threshold.

    Attributes:
        scalar_mean / scalar_std: (3,) standardisation of (score, map_mean, map_top) from
            held-out normals.
        pca_mean: (D,) feature mean; pca_components: (K, D) projection; pca_std: (K,) scale.
        coef: (3 + K,) logistic-regression weights; intercept: its bias.
        guard: one-class raw score above which an image is always anomalous (None: no guard).
        threshold: the refined raw score threshold the bundle is calibrated with.
        c: chosen inverse regularisation strength; cv_auroc: its cross-validated AUROC.
    """

    stem: ClassVar[str] = "refiner"

    scalar_mean: np.ndarray
    scalar_std: np.ndarray
    pca_mean: np.ndarray
    pca_components: np.ndarray
    pca_std: np.ndarray
    coef: np.ndarray
    intercept: float
    guard: float | None
    threshold: float
    c: float
    cv_auroc: float | None

    def design(self, x: RefinerInputs) -> np.ndarray:
        """(N, 3 + K) standardised regression inputs."""
        scalars = np.stack([x.score, x.map_mean, x.map_top], axis=1).astype(np.float64)
        scalars = (scalars - self.scalar_mean) / self.scalar_std
        if len(self.pca_components):
            proj = (x.pooled.astype(np.float64) - self.pca_mean) @ self.pca_components.T
            return np.concatenate([scalars, proj / self.pca_std], axis=1)
        return scalars

    def logit(self, x: RefinerInputs) -> np.ndarray:
        """(N,) refined scores before the guard."""
        return self.design(x) @ self.coef + self.intercept

    def score(self, x: RefinerInputs) -> np.ndarray:
        """(N,) refined raw scores (with the guard), as the exported graph computes them."""
        z = self.logit(x)
        if self.guard is not None:
            z = np.maximum(z, self.threshold + (x.score - self.guard) / self.scalar_std[0])
        return z

    def summary(self) -> dict[str, Any]:
        """Small, JSON-friendly description for job records and ``model.json``."""
        names = [*SCALAR_FEATURES, *(f"pc{i}" for i in range(len(self.pca_components)))]
        weights = {n: round(float(w), 4) for n, w in zip(names, self.coef, strict=True)}
        return {
            "features": names,
            "weights": weights,
            "c": self.c,
            "cv_auroc": self.cv_auroc,
            "guard": self.guard,
            "threshold": self.threshold,
        }


def _standardiser(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    return mean, np.where(std > 1e-12, std, 1.0)


def fit_refiner(
    train: RefinerInputs,
    labels: np.ndarray,
    normals: RefinerInputs,
    *,
    components: int = 16,
    c_grid: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0),
    cv_folds: int = 5,
    guard_quantile: float | None = 0.999,
    seed: int = 0,
) -> tuple[RefinerParams, np.ndarray]:
    """Fit the refiner; return it (threshold unset: 0) and out-of-fold logits of ``train``.

    Args:
        train: inputs of the training images (labelled defects and normals).
        labels: (N,) 1 for defects, 0 for normals.
        normals: inputs of held-out normal images (the standardisation and the guard are set
            from their one-class scores; they are also part of ``train`` as negatives).
        components: principal components of the pooled features (0: scalars only).
        c_grid: candidate inverse L2 strengths; the one with the best cross-validated AUROC
            (ties: the strongest regularisation) is used.
        cv_folds: stratified folds for choosing ``c`` and for the out-of-fold logits.
        guard_quantile: quantile of ``normals``' one-class scores above which the one-class
            detector alone decides (None: no guard).
        seed: seeds the folds.
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from inspection.loop.gate import auroc

    y = np.asarray(labels).astype(int)
    scalars_n = np.stack([normals.score, normals.map_mean, normals.map_top], axis=1)
    s_mean, s_std = _standardiser(scalars_n.astype(np.float64))
    k = int(min(components, max(0, len(train) - 2), train.pooled.shape[1]))
    if k > 0:
        pca = PCA(n_components=k, random_state=seed).fit(train.pooled.astype(np.float64))
        p_mean, p_comp = pca.mean_, pca.components_
        p_std = np.sqrt(np.maximum(pca.explained_variance_, 1e-12))
    else:
        d = train.pooled.shape[1]
        p_mean, p_comp, p_std = np.zeros(d), np.zeros((0, d)), np.zeros(0)
    params = RefinerParams(
        s_mean, s_std, p_mean, p_comp, p_std, np.zeros(3 + k), 0.0, None, 0.0, 1.0, None
    )
    x = params.design(train)
    n_folds = int(min(cv_folds, np.bincount(y, minlength=2).min()))
    best_c, best_auc = c_grid[0], -1.0
    oof = np.zeros(len(y))
    if n_folds >= 2:
        folds = list(StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(x, y))
        for c in sorted(c_grid):
            pred = np.zeros(len(y))
            for tr, va in folds:
                lr = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
                lr.fit(x[tr], y[tr])
                pred[va] = lr.decision_function(x[va])
            auc = auroc(pred, y) or 0.0
            if auc > best_auc + 1e-9:
                best_c, best_auc, oof = c, auc, pred
    lr = LogisticRegression(C=best_c, class_weight="balanced", max_iter=2000).fit(x, y)
    params.coef = lr.coef_[0].astype(np.float64)
    params.intercept = float(lr.intercept_[0])
    params.c = float(best_c)
    params.cv_auroc = float(best_auc) if best_auc >= 0 else None
    if guard_quantile is not None:
        params.guard = float(np.quantile(normals.score, guard_quantile))
    if n_folds < 2:
        oof = params.logit(train)
    logger.info(
        "refiner: %d defects / %d normals, %d components, C=%g, cross-validated AUROC %s",
        int(y.sum()),
        int((y == 0).sum()),
        k,
        best_c,
        f"{best_auc:.3f}" if best_auc >= 0 else "n/a",
    )
    return params, oof


class RefinedModel(nn.Module):
    """Deployable graph: raw [0, 1] RGB -> (refined score (N,), anomaly map (N, 1, S, S)).

    Args:
        deployable: the one-class detector's deployable graph (normalisation inside).
        pooled: pooled-feature module on raw [0, 1] RGB input (normalisation inside).
        params: the fitted refiner.
    """

    scalar_mean: torch.Tensor
    scalar_std: torch.Tensor
    pca_mean: torch.Tensor
    pca_components: torch.Tensor
    pca_std: torch.Tensor
    coef: torch.Tensor
    intercept: torch.Tensor
    guard: torch.Tensor
    threshold: torch.Tensor

    def __init__(self, deployable: nn.Module, pooled: nn.Module, params: RefinerParams) -> None:
        super().__init__()
        self.deployable = deployable
        self.pooled = pooled

        def buf(name: str, value: np.ndarray | float) -> None:
            self.register_buffer(name, torch.as_tensor(np.asarray(value), dtype=torch.float32))

        buf("scalar_mean", params.scalar_mean)
        buf("scalar_std", params.scalar_std)
        buf("pca_mean", params.pca_mean)
        buf("pca_components", params.pca_components)
        buf("pca_std", params.pca_std)
        buf("coef", params.coef)
        buf("intercept", params.intercept)
        self.use_pca = len(params.pca_components) > 0
        self.use_guard = params.guard is not None
        buf("guard", params.guard if params.guard is not None else 0.0)
        buf("threshold", params.threshold)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        score, amap = self.deployable(image)
        flat = amap.reshape(amap.shape[0], -1)
        k = max(1, round(flat.shape[1] * TOP_FRACTION))
        top = torch.topk(flat, k, dim=1).values.mean(dim=1)
        scalars = torch.stack([score, flat.mean(dim=1), top], dim=1)
        design = (scalars - self.scalar_mean) / self.scalar_std
        if self.use_pca:
            proj = (self.pooled(image) - self.pca_mean) @ self.pca_components.T
            design = torch.cat([design, proj / self.pca_std], dim=1)
        z = design @ self.coef + self.intercept
        if self.use_guard:
            z = torch.maximum(z, self.threshold + (score - self.guard) / self.scalar_std[0])
        return z, amap
