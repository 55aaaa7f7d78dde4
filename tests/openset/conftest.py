"""Fixtures for typing tests: a tiny torch-backend extractor and synthetic defect crops.

Whole synthetic images are mostly good surface; the tests type 64 px crops around the defect
mask (training-time use of masks; the station crops around a detector's anomaly map instead).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from inspection.data.synthetic import SyntheticLine
from inspection.openset.config import FeatureConfig, HeadConfig, TyperConfig
from inspection.openset.crops import crop_defect

KNOWN = ("hole", "stain", "missing")
NEW = "crack"
SIZE = 64


@dataclass
class Crops:
    """Defect crops (N, 64, 64, 3) uint8 with their type names."""

    images: np.ndarray
    types: list[str]


def _crops(types: tuple[str, ...], n: int, start: int) -> Crops:
    line = SyntheticLine("disc", size=128, seed=0)
    samples = line.defects(n, start=start, types=types)
    images = np.stack([crop_defect(s.image, s.mask, SIZE) for s in samples])
    return Crops(images, [str(s.defect_type) for s in samples])


@pytest.fixture(scope="session")
def tiny_config() -> TyperConfig:
    return TyperConfig(
        features=FeatureConfig(
            image_size=SIZE, dihedral_views=2, random_views=1, backend="torch", batch_size=32
        ),
        head=HeadConfig(epochs=15, hidden=64, embed_dim=8),
        calibration_folds=3,
    )


@pytest.fixture(scope="session")
def extractor(tiny_config: TyperConfig):  # type: ignore[no-untyped-def]
    from inspection.openset.features import FeatureExtractor

    return FeatureExtractor(tiny_config.features)


@pytest.fixture(scope="session")
def known_train() -> Crops:
    return _crops(KNOWN, 36, start=0)


@pytest.fixture(scope="session")
def new_train() -> Crops:
    return _crops((NEW,), 12, start=500)


@pytest.fixture(scope="session")
def test_crops() -> Crops:
    return _crops((*KNOWN, NEW), 40, start=1000)


@pytest.fixture(scope="session")
def features(extractor, known_train: Crops, new_train: Crops, test_crops: Crops):  # type: ignore[no-untyped-def]
    """(known-train views, new-type views, test features as is)."""
    return (
        extractor.extract_views(known_train.images),
        extractor.extract_views(new_train.images),
        extractor.extract(test_crops.images),
    )
