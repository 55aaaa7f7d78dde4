"""Shared fixtures: the synthetic line for unit tests, the real data root when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inspection.data.imageset import ImageSet, from_samples
from inspection.data.synthetic import SyntheticLine

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
MT_ROOT = SHARED_DATA / "magnetic_tile"
NEU_ROOT = SHARED_DATA / "neu_surface"


def synthetic_set(
    size: int, n_normal: int, n_defect: int, seed: int = 0, family: str = "disc"
) -> ImageSet:
    """A small synthetic image set: ``n_normal`` good parts then ``n_defect`` defective ones."""
    line = SyntheticLine(family=family, size=size, seed=seed)
    samples = line.normals(n_normal) + line.defects(n_defect, start=10_000)
    return from_samples(
        [s.image for s in samples],
        [s.mask for s in samples],
        [s.defect_type for s in samples],
        [f"{s.family}-{s.index}" for s in samples],
    )


@pytest.fixture(scope="session")
def mt_root() -> Path:
    """Root of the magnetic-tile data; skips the test when ../shared/data is absent."""
    if not MT_ROOT.is_dir():
        pytest.skip(f"real data not available at {MT_ROOT} (see ../shared/data/README.md)")
    return MT_ROOT


@pytest.fixture(scope="session")
def neu_root() -> Path:
    """Root of the NEU steel-strip data; skips the test when ../shared/data is absent."""
    if not NEU_ROOT.is_dir():
        pytest.skip(f"real data not available at {NEU_ROOT} (see ../shared/data/README.md)")
    return NEU_ROOT


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
