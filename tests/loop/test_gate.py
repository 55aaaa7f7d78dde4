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


def _at_threshold(fpr: float, recall: float) -> dict[str, float | None]:
    return {
        "fpr_at_threshold": fpr,
        "recall_at_threshold": recall,
        "n_defects": 20,
        "n_normals": 40,
    }


def test_default_gate_compares_false_positives_and_floors_recall() -> None:
    """The default: fewer false alarms at the deployed threshold, recall only as a floor.

    The active model flagged every labelled defect (recall 1) by construction; a candidate that
    catches 96 % of them with as few false alarms is promoted, one that catches 85 % is not.
    """
    gate = GateConfig()
    assert gate.metric == "fpr_at_threshold"
    active = _at_threshold(0.04, 1.0)
    assert decide(gate, _at_threshold(0.04, 0.96), active).promote
    assert decide(gate, _at_threshold(0.0, 0.95), active).promote
    more_alarms = decide(gate, _at_threshold(0.08, 1.0), active)
    assert not more_alarms.promote
    assert "worse" in more_alarms.reason
    misses = decide(gate, _at_threshold(0.0, 0.85), active)
    assert not misses.promote
    assert "misses labelled defects" in misses.reason
    assert decide(GateConfig(min_recall=0.0), _at_threshold(0.0, 0.5), active).promote


def test_model_metrics_keys() -> None:
    m = model_metrics(np.array([1.0, 0.0]), np.array([1, 0]), 0.5, 0.95)
    assert m["fpr_at_recall"] == 0.0
    assert m["fpr_at_threshold"] == 0.0
    assert m["auroc"] == 1.0
    assert m["f1_at_threshold"] == 1.0
