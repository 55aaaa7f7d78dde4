"""Metrics agree with an independent implementation on raw (unbounded) scores."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from inspection.data.imageset import ImageSet
from inspection.evaluation import calibrate, evaluate, image_metrics, pixel_auroc


def test_auroc_on_raw_scores_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(300, 20, 50), rng.normal(330, 30, 60)]).astype(np.float32)
    labels = np.r_[np.zeros(50), np.ones(60)].astype(np.int64)
    got = image_metrics(scores, labels, threshold=320.0)["image_auroc"]
    assert got is not None
    assert abs(got - roc_auc_score(labels, scores)) < 1e-6


def test_pixel_auroc_and_evaluate_per_type() -> None:
    rng = np.random.default_rng(1)
    masks = np.zeros((6, 16, 16), bool)
    masks[3:, 4:8, 4:8] = True
    maps = rng.normal(100, 5, (6, 1, 16, 16)).astype(np.float32)
    maps[:, 0][masks] += 30
    assert pixel_auroc(maps, masks) > 0.95
    test = ImageSet(np.zeros((6, 16, 16, 3), np.uint8), masks, ["good"] * 3 + ["a", "b", "b"])
    scores = maps.reshape(6, -1).max(1)
    cal = calibrate(scores[:3], maps[:3])
    result = evaluate(scores, maps, test, cal)
    assert set(result["per_type"]) == {"a", "b"}
    assert result["aupro"] > 0.9
    assert 0.0 <= float(cal.normalize_score(cal.image_threshold)) == 0.5
