"""Training-time augmentation (``augment``): the pipeline, and that fits really see it."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest
import torch

from inspection.detectors import registry
from inspection.detectors.augment import augment_batch, build_augment
from inspection.detectors.base import Detector, TrainedDetectorConfig
from tests.conftest import synthetic_set

TRAINED = [
    k
    for k in registry.keys()  # noqa: SIM118 (a module function, not a dict)
    if issubclass(registry.get(k).Config, TrainedDetectorConfig)
]


def test_pipeline_is_small_seeded_and_shape_preserving() -> None:
    images = synthetic_set(64, 6, 0, seed=3).images
    assert build_augment("none", 0) is None
    first, again = build_augment("nuisance", 7), build_augment("nuisance", 7)
    assert first is not None and again is not None
    out = augment_batch(first, images)
    assert out.shape == images.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, augment_batch(again, images))  # reproducible by seed
    diff = np.abs(out.astype(np.int16) - images.astype(np.int16))
    assert diff.max() > 0  # it does something ...
    assert diff.mean() < 20  # ... and keeps the part recognisable (no flips, no repaint)
    with pytest.raises(ValueError, match="unknown augmentation"):
        build_augment("heavy", 0)  # type: ignore[arg-type]


def test_gradient_trained_detectors_take_the_option() -> None:
    assert set(TRAINED) >= {"stfpm", "mkd", "memae", "memae_feat", "ocgan", "ganomaly"}
    assert "padim" not in TRAINED and "cutpaste" not in TRAINED
    cls = registry.get("stfpm")
    assert cls.quick_config().augment == "nuisance"  # type: ignore[attr-defined]
    with pytest.raises(pydantic.ValidationError):
        cls.Config(type="stfpm", augment="flips")  # type: ignore[arg-type]


@pytest.mark.parametrize("augment", ["none", "nuisance"])
def test_fit_batches_are_augmented_only_when_asked(
    augment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside fit, ``training_batch`` is the plain slice with ``none``, fresh views otherwise."""
    cls = registry.get("stfpm")
    det: Detector = cls(
        cls.Config.model_validate({**cls.quick_config().model_dump(), "augment": augment})
    )
    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def spy(images: torch.Tensor, progress: object) -> None:
        index = torch.tensor([0, 2, 1])
        seen.append(
            (images[index], det.training_batch(images, index), det.training_batch(images, index))
        )

    monkeypatch.setattr(det, "fit_model", spy)
    det.fit(synthetic_set(64, 4, 0, seed=1).images)
    plain, view, view_again = seen[0]
    assert view.shape == plain.shape
    if augment == "none":
        assert not det.augmenting
        torch.testing.assert_close(view, plain)
    else:
        assert not torch.allclose(view, plain)
        assert not torch.allclose(view, view_again)  # every call draws new variations
    assert not det.augmenting  # only during fit
