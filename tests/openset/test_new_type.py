"""Acceptance: a new defect type is added through labels alone, no code change.

Train on hole / stain / missing; crack is mostly flagged unknown. Then crack is learned in two
ways and recognised afterwards: ``fit`` again with crack labels (any method), and
``add_class`` with a few crack images (class-mean methods, no retraining).
"""

from __future__ import annotations

import numpy as np

from inspection.openset.classifier import OpenSetTyper
from inspection.openset.config import MahalanobisConfig, MetricConfig, MspConfig, TyperConfig

from .conftest import NEW, Crops


def _rates(typer: OpenSetTyper, feats: np.ndarray, test: Crops) -> dict[str, float]:
    res = typer.predict_features(feats)
    truth = np.array(test.types)
    new = truth == NEW
    flagged = np.array([r.is_unknown for r in res])
    label = np.array([r.label for r in res])
    return {
        "new_flagged": float(flagged[new].mean()),
        "known_flagged": float(flagged[~new].mean()),
        "known_acc": float((label[~new] == truth[~new]).mean()),
        "new_acc": float((label[new] == NEW).mean()),
    }


def test_unknown_type_is_flagged_then_learned_from_labels(
    tiny_config: TyperConfig,
    extractor,
    features,
    known_train: Crops,
    new_train: Crops,
    test_crops: Crops,
) -> None:  # type: ignore[no-untyped-def]
    known_views, new_views, test_feats = features
    cfg = tiny_config.model_copy(update={"method": MspConfig()})
    before = OpenSetTyper(cfg, extractor).fit_features(known_views, known_train.types)
    assert NEW not in before.classes
    r0 = _rates(before, test_feats, test_crops)
    assert r0["known_acc"] >= 0.9, r0
    assert r0["new_flagged"] >= 0.5, r0
    assert r0["new_flagged"] > r0["known_flagged"] + 0.3, r0

    after = OpenSetTyper(cfg, extractor).fit_features(
        np.concatenate([known_views, new_views]), [*known_train.types, *new_train.types]
    )
    assert NEW in after.classes
    r1 = _rates(after, test_feats, test_crops)
    assert r1["new_acc"] >= 0.8, r1
    assert r1["new_flagged"] <= 0.2, r1
    assert r1["known_acc"] >= 0.9, r1


def test_add_class_recognises_new_type_without_retraining(
    tiny_config: TyperConfig,
    extractor,
    features,
    known_train: Crops,
    new_train: Crops,
    test_crops: Crops,
) -> None:  # type: ignore[no-untyped-def]
    known_views, _, test_feats = features
    for method in (MahalanobisConfig(), MetricConfig()):
        cfg = tiny_config.model_copy(update={"method": method})
        typer = OpenSetTyper(cfg, extractor).fit_features(known_views, known_train.types)
        head_before = {k: v.clone() for k, v in typer.head.state_dict().items()}  # type: ignore[union-attr]
        typer.add_class(NEW, new_train.images)  # images in, through the extractor
        assert typer.classes[-1] == NEW
        for k, v in typer.head.state_dict().items():  # type: ignore[union-attr]
            assert (v == head_before[k]).all(), "add_class must not retrain"
        r = _rates(typer, test_feats, test_crops)
        assert r["new_acc"] >= 0.8, (method.method, r)
        assert r["known_acc"] >= 0.8, (method.method, r)
