"""Gate metrics against hand-computed values, and the promotion decision."""

from __future__ import annotations

import numpy as np
import pytest

from inspection.loop.config import GateConfig
from inspection.loop.gate import (
    auroc,
    decide,
    fpr_at_recall,
    model_metrics,
    threshold_for_recall,
    threshold_metrics,
)


def test_fpr_at_recall_by_hand() -> None:
    # defects 0.9 0.8 0.7 0.2; normals 0.1 0.3 0.5 0.75
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.3, 0.5, 0.75])
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    assert fpr_at_recall(scores, labels, 0.75) == pytest.approx(0.25)  # threshold 0.7
    assert fpr_at_recall(scores, labels, 1.0) == pytest.approx(0.75)  # threshold 0.2
    assert fpr_at_recall(scores, labels, 0.5) == pytest.approx(0.0)  # threshold 0.8
    assert fpr_at_recall(scores[:4], labels[:4], 0.95) is None
    assert threshold_for_recall(scores[:4], 0.75) == pytest.approx(0.7)


def test_auroc_matches_sklearn_with_ties() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 200).astype(float)
    labels = rng.integers(0, 2, 200)
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    assert auroc(scores, np.ones(200)) is None


def test_threshold_metrics() -> None:
    m = threshold_metrics(np.array([0.9, 0.4, 0.6, 0.1]), np.array([1, 1, 0, 0]), 0.5)
    assert m == {"recall": 0.5, "fpr": 0.5, "precision": 0.5, "f1": 0.5}


def _metrics(fpr: float, n_def: int = 10, n_norm: int = 10) -> dict[str, float | None]:
    return {"fpr_at_recall": fpr, "auroc": 1 - fpr, "n_defects": n_def, "n_normals": n_norm}


def test_decide() -> None:
    gate = GateConfig(metric="fpr_at_recall", tolerance=0.02)
    assert decide(gate, _metrics(0.1), _metrics(0.2)).promote
    assert decide(gate, _metrics(0.21), _metrics(0.2)).promote  # within tolerance
    worse = decide(gate, _metrics(0.3), _metrics(0.2))
    assert not worse.promote
    assert "worse" in worse.reason
    assert "0.3000 vs 0.2000" in worse.reason
    small = decide(gate, _metrics(0.0, n_def=1), _metrics(0.2))
    assert not small.promote
    assert "too small" in small.reason
    assert decide(gate, _metrics(0.5), None).promote
    assert not decide(GateConfig(promote_without_active=False), _metrics(0.5), None).promote
    higher = GateConfig(metric="auroc")
    assert not decide(higher, _metrics(0.3), _metrics(0.2)).promote  # auroc 0.7 < 0.8


def test_model_metrics_keys() -> None:
    m = model_metrics(np.array([1.0, 0.0]), np.array([1, 0]), 0.5, 0.95)
    assert m["fpr_at_recall"] == 0.0
    assert m["auroc"] == 1.0
    assert m["f1_at_threshold"] == 1.0
