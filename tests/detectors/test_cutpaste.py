"""CutPaste self-check: augmentations, tiny fit, shapes, ranking, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
