"""The promotion gate: candidate and active model scored on the same frozen holdout.

Metrics are computed here with NumPy from raw image scores (higher = more anomalous), so they
need no torch and treat any score scale alike (rank metrics are scale-free; threshold metrics
use each model's own deployed threshold).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inspection.loop.config import GATE_METRICS, GateConfig


def fpr_at_recall(scores: np.ndarray, labels: np.ndarray, recall: float = 0.95) -> float | None:
    """False-positive rate at the highest threshold that still catches ``recall`` of defects.

    Args:
        scores: (N,) image scores, higher = more anomalous.
        labels: (N,) 1 for defects, 0 for normals.
        recall: fraction of defects that must score at or above the threshold.

    Returns:
        Fraction of normals scoring at or above that threshold (ties count as flagged), or None
        when either class is missing.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    pos, neg = np.sort(s[y])[::-1], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return None
    k = max(1, math.ceil(recall * len(pos) - 1e-9))
    threshold = pos[k - 1]
    return float(np.mean(neg >= threshold))


def threshold_for_recall(defect_scores: np.ndarray, recall: float) -> float:
    """The highest threshold ``t`` with ``mean(defect_scores >= t) >= recall``."""
    pos = np.sort(np.asarray(defect_scores, dtype=np.float64))[::-1]
    if len(pos) == 0:
        raise ValueError("threshold_for_recall needs at least one defect score")
    k = max(1, math.ceil(recall * len(pos) - 1e-9))
    return float(pos[k - 1])


def auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties count half); None with one class."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def threshold_metrics(
    scores: np.ndarray, labels: np.ndarray, threshold: float
) -> dict[str, float | None]:
    """Recall, false-positive rate, precision and F1 of ``scores > threshold``."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    flagged = s > threshold
    tp = int((flagged & y).sum())
    fp = int((flagged & ~y).sum())
    fn = int((~flagged & y).sum())
    recall = tp / (tp + fn) if (tp + fn) else None
    fpr = fp / int((~y).sum()) if (~y).any() else None
    precision = tp / (tp + fp) if (tp + fp) else None
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else None
    return {"recall": recall, "fpr": fpr, "precision": precision, "f1": f1}


def model_metrics(
    scores: np.ndarray, labels: np.ndarray, threshold: float, target_recall: float
) -> dict[str, float | None]:
    """Every gate metric of one model on one holdout (keys of :data:`GATE_METRICS`, and more)."""
    at = threshold_metrics(scores, labels, threshold)
    return {
        "fpr_at_recall": fpr_at_recall(scores, labels, target_recall),
        "auroc": auroc(scores, labels),
        "recall_at_threshold": at["recall"],
        "fpr_at_threshold": at["fpr"],
        "f1_at_threshold": at["f1"],
        "n_defects": float(np.asarray(labels).astype(bool).sum()),
        "n_normals": float((~np.asarray(labels).astype(bool)).sum()),
    }


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the gate: whether to promote, why, and the numbers it compared."""

    promote: bool
    reason: str
    metric: str
    candidate: float | None
    active: float | None
    tolerance: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    config: GateConfig,
    candidate: dict[str, float | None],
    active: dict[str, float | None] | None,
) -> GateDecision:
    """Apply the gate to the candidate's and the active model's holdout metrics.

    ``active`` None means the station has no active model. The reason is a sentence for the
    job record and the UI.
    """
    metric = config.metric
    higher_better = GATE_METRICS[metric]
    cand = candidate.get(metric)
    n_def = int(candidate.get("n_defects") or 0)
    n_norm = int(candidate.get("n_normals") or 0)
    if active is None:
        if config.promote_without_active:
            return GateDecision(
                True, "the station has no active model", metric, cand, None, config.tolerance
            )
        return GateDecision(
            False,
            "the station has no active model and promote_without_active is off",
            metric,
            cand,
            None,
            config.tolerance,
        )
    act = active.get(metric)
    if n_def < config.min_defects or n_norm < config.min_normals:
        return GateDecision(
            False,
            f"holdout too small to compare models: {n_def} defects and {n_norm} normals "
            f"(gate needs {config.min_defects} and {config.min_normals})",
            metric,
            cand,
            act,
            config.tolerance,
        )
    if cand is None or act is None:
        return GateDecision(
            False,
            f"{metric} is undefined on this holdout (candidate {cand}, active {act})",
            metric,
            cand,
            act,
            config.tolerance,
        )
    recall = candidate.get("recall_at_threshold")
    if config.min_recall > 0 and recall is not None and recall < config.min_recall - 1e-12:
        return GateDecision(
            False,
            f"candidate misses labelled defects on the holdout: it flags {recall:.4f} of them at "
            f"its deployed threshold (gate needs {config.min_recall:g})",
            metric,
            cand,
            act,
            config.tolerance,
        )
    worse_by = (act - cand) if higher_better else (cand - act)
    direction = "higher" if higher_better else "lower"
    if worse_by > config.tolerance + 1e-12:
        return GateDecision(
            False,
            f"candidate is worse than the active model on the holdout: {metric} "
            f"{cand:.4f} vs {act:.4f} ({direction} is better, tolerance {config.tolerance:g})",
            metric,
            cand,
            act,
            config.tolerance,
        )
    return GateDecision(
        True,
        f"candidate is not worse than the active model: {metric} {cand:.4f} vs {act:.4f} "
        f"({direction} is better, tolerance {config.tolerance:g})",
        metric,
        cand,
        act,
        config.tolerance,
    )


def score_bundle(bundle: str | Path, images: np.ndarray) -> tuple[np.ndarray, float]:
    """Raw scores of ``images`` under a bundle as the station runs it, and its threshold."""
    from inspection.runtime import OpenVinoModel

    model = OpenVinoModel(bundle)
    if len(images) == 0:
        return np.zeros(0, np.float32), model.image_threshold
    raw = np.concatenate(
        [model.predict(images[i : i + 8]).raw_score for i in range(0, len(images), 8)]
    )
    return raw, model.image_threshold
