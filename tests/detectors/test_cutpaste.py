"""CutPaste self-check: augmentations, tiny fit, shapes, ranking, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inspection.detectors import registry
from inspection.detectors.cutpaste import cutpaste, cutpaste_scar
from tests.detectors._tiny import check_output, fit_and_predict


def test_augmentations_change_a_bounded_region() -> None:
    rng = np.random.default_rng(0)
    img = np.random.default_rng(1).uniform(size=(64, 64, 3)).astype(np.float32)
    for _ in range(20):
        out, (cy, cx) = cutpaste(img, rng, 64.0 * 64.0)
        changed = np.abs(out - img).sum(-1) > 0
        assert out.shape == img.shape and 0 <= cy < 64 and 0 <= cx < 64
        assert changed.mean() <= 0.16
        out, (cy, cx) = cutpaste_scar(img, rng, 0.25)
        assert out.shape == img.shape and 0 <= cy < 64 and 0 <= cx < 64


def test_tiny_fit_ranks_defects_and_round_trips(tmp_path: Path) -> None:
    det, out, labels = fit_and_predict("cutpaste")
    check_output(out, labels)
    det.save(tmp_path)
    again = registry.get("cutpaste").load(tmp_path)
    test_images = np.stack([np.zeros((64, 64, 3), np.uint8)])
    np.testing.assert_allclose(
        again.predict(test_images).score, det.predict(test_images).score, rtol=1e-5
    )


def test_pastes_are_normalised_like_inputs_under_standardisation() -> None:
    """Augmented images go through the same normalisation as normal ones (no clipping shortcut).

    A dark part with a few bright glints: standardised, the glints lie above 1.0; pasting in
    the normalised domain and mapping back clipped them in augmented images only.
    """
    cls = registry.get("cutpaste")
    det = cls(cls.Config(type="cutpaste", image_size=64, photometric="standardize"))
    raw = np.full((2, 64, 64, 3), 40, np.uint8)
    raw[:, 10:12, 10:40] = 250
    normal = det.normalize(torch.from_numpy(raw).permute(0, 3, 1, 2).float() / 255.0)
    aug, centres = det._augment(raw, np.random.default_rng(0))
    assert aug.shape == (6, 3, 64, 64) and centres.shape == (6, 2)
    assert float(normal.max()) > 1.5  # (standardised glint - 0.5) / 0.5, well above the clip
    # rows keep the glints unclipped wherever the paste did not land on them
    assert float(aug.amax(dim=(1, 2, 3)).max()) == pytest.approx(float(normal.max()), rel=0.2)
