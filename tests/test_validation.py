"""Label-free validation: painted synthetic defects and the engine's score-mode choice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inspection import training
from inspection.data.synthetic import PAINTABLE_TYPES, paint_defect
from inspection.detectors import registry
from inspection.detectors.base import model_score_mode
from inspection.validation import select_score_mode, synthetic_defects
from tests.conftest import synthetic_set

KEYS = registry.keys()
MODED = [k for k in KEYS if len(registry.get(k).score_modes) >= 2]


def test_paint_defect_changes_only_the_masked_pixels() -> None:
    image = np.full((64, 64, 3), 128, np.uint8)
    for kind in PAINTABLE_TYPES:
        painted, mask = paint_defect(image, kind, np.random.default_rng(0))
        assert painted.shape == image.shape and painted.dtype == np.uint8
        assert mask.shape == (64, 64) and mask.any(), kind
        changed = (painted != image).any(axis=2)
        assert changed.any() and not changed[mask == 0].sum() > 0.05 * changed.size, kind
    assert (image == 128).all()  # the input is not modified


def test_paint_defect_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="cannot paint"):
        paint_defect(np.zeros((8, 8, 3), np.uint8), "missing", np.random.default_rng(0))
    with pytest.raises(ValueError, match="square"):
        paint_defect(np.zeros((8, 9, 3), np.uint8), "hole", np.random.default_rng(0))


def test_synthetic_defects_are_seeded() -> None:
    images = synthetic_set(64, 4, 0).images
    a, ma = synthetic_defects(images, seed=3)
    b, mb = synthetic_defects(images, seed=3)
    assert (a == b).all() and (ma == mb).all() and ma.reshape(4, -1).any(axis=1).all()


def test_every_moded_detector_declares_auto() -> None:
    assert set(MODED) >= {"cutpaste", "mkd"}
    for key in MODED:
        cls = registry.get(key)
        assert cls.Config.model_fields["score_mode"].default == "auto"
        with pytest.raises(ValueError, match="unknown score mode"):
            cls(cls.quick_config()).set_score_mode("nope")


def test_select_needs_modes() -> None:
    det = registry.get("padim")(registry.get("padim").quick_config())
    with pytest.raises(ValueError, match="no score modes"):
        select_score_mode(det, np.zeros((2, 64, 64, 3), np.uint8))


@pytest.mark.parametrize("key", MODED)
def test_engine_resolves_auto_and_the_choice_travels(key: str, tmp_path: Path) -> None:
    cls = registry.get(key)
    trained = training.train(cls(cls.quick_config()), synthetic_set(64, 24, 0, seed=1))
    sel = trained.score_selection
    assert sel is not None and set(sel["auroc"]) == set(cls.score_modes)
    chosen = sel["chosen"]
    assert chosen in cls.score_modes and sel["auroc"][chosen] == max(sel["auroc"].values())
    assert trained.detector.config.score_mode == chosen  # type: ignore[attr-defined]
    assert trained.detector.torch_model.score_mode == model_score_mode(chosen)
    bundle = training.export_openvino(trained, tmp_path / "bundle")
    meta = json.loads((bundle / "model.json").read_text())
    assert meta["score_selection"]["chosen"] == chosen
    assert meta["config"]["score_mode"] == chosen
    again = training.load_trained(bundle)
    assert again.detector.torch_model.score_mode == model_score_mode(chosen)
    assert again.score_selection == sel


def test_epoch_selector_keeps_the_best_epoch_and_stops_on_patience() -> None:
    """Validation scores 0.5, 0.9, 0.7, 0.6: epoch 2's weights are kept, training stops at 4."""
    import torch

    cls = registry.get("stfpm")
    det = cls(
        cls.quick_config().model_copy(update={"epochs": 12, "validate_every": 1, "patience": 2})
    )
    scores = iter([0.5, 0.9, 0.7, 0.6, 0.95])
    snapshots: list[dict[str, torch.Tensor]] = []

    def validator() -> dict[str, float]:
        snapshots.append({k: v.clone() for k, v in det.torch_model.state_dict().items()})
        s = next(scores)
        return {"image_auroc": s, "pixel_auroc": s, "score": s}

    det.validator = validator
    det.fit(synthetic_set(64, 8, 0).images)
    sel = det.epoch_selection
    assert sel is not None
    assert sel["chosen_epoch"] == 2 and sel["epochs_run"] == 4
    assert [h["epoch"] for h in sel["history"]] == [1, 2, 3, 4]
    kept = det.torch_model.state_dict()
    assert all(torch.equal(kept[k], v) for k, v in snapshots[1].items())
    assert not all(torch.equal(kept[k], v) for k, v in snapshots[3].items())


def test_engine_selects_stfpm_epoch_on_painted_defects() -> None:
    cls = registry.get("stfpm")
    cfg = cls.quick_config().model_copy(update={"epochs": 2, "validate_every": 1})
    trained = training.train(cls(cfg), synthetic_set(64, 16, 0))
    sel = trained.epoch_selection
    assert sel is not None and sel["chosen_epoch"] in (1, 2) and len(sel["history"]) == 2
    assert all(
        0.0 <= h["image_auroc"] <= 1.0 and 0.0 <= h["pixel_auroc"] <= 1.0 for h in sel["history"]
    )
    assert trained.detector.validator is None  # not kept after training
    off = cls(cfg.model_copy(update={"epoch_selection": "last"}))
    assert training.train(off, synthetic_set(64, 16, 0)).epoch_selection is None
