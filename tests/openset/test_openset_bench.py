"""``mt-open`` harness on a tiny fake magnetic-tile folder; real data only when present."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspection.data.magnetic_tile import DEFECT_CLASSES, NORMAL_CLASS
from inspection.data.synthetic import SyntheticLine
from inspection.openset.config import FeatureConfig, HeadConfig, TyperConfig

# Stand-in synthetic defect type for each magnetic-tile class.
_AS = {
    "Blowhole": "hole",
    "Break": "missing",
    "Crack": "crack",
    "Fray": "scratch",
    "Uneven": "stain",
}


def _fake_magnetic_tile(root: Path, per_class: int = 8) -> Path:
    line = SyntheticLine("tile", size=64, seed=1)
    for c, cls in enumerate((NORMAL_CLASS, *DEFECT_CLASSES)):
        folder = root / f"MT_{cls}" / "Imgs"
        folder.mkdir(parents=True)
        for i in range(per_class):
            kind = _AS.get(cls)
            s = line.render(100 * c + i, kind)
            name = f"exp{1 + i % 6}_num_{i}"  # groups 1..6: some train, some test
            cv2.imwrite(str(folder / f"{name}.jpg"), cv2.cvtColor(s.image, cv2.COLOR_RGB2GRAY))
            cv2.imwrite(str(folder / f"{name}.png"), s.mask.astype(np.uint8) * 255)
    return root


@pytest.mark.slow
def test_openset_bench_writes_results_and_figures(tmp_path: Path) -> None:
    from inspection.bench import openset_bench as bench

    data = _fake_magnetic_tile(tmp_path / "magnetic_tile")
    config = TyperConfig(
        features=FeatureConfig(image_size=64, dihedral_views=1, random_views=0, backend="torch"),
        head=HeadConfig(epochs=3, hidden=16, embed_dim=4),
        calibration_folds=2,
    )
    out = tmp_path / "results"
    payload = bench.run(data, config, results_dir=out, cache_dir=tmp_path / "cache")
    saved = json.loads((out / "mt-open.json").read_text())
    assert saved["protocol"] == "mt-open"
    assert {"commit", "date", "machine"} <= set(saved)
    assert (
        set(saved["methods"])
        == set(payload["methods"])
        == {"msp", "max_logit", "energy", "mahalanobis", "metric", "openmax", "knn"}
    )
    for entry in saved["methods"].values():
        assert set(bench.METRICS) <= set(entry)
        assert [f["unknown"] for f in entry["folds"]] == list(DEFECT_CLASSES)
        assert 0.0 <= entry["unknown_accuracy"] <= 1.0
    assert (out / "mt-open.md").read_text().count("| msp |") >= 1
    assert (out / "mt-open" / "roc.png").stat().st_size > 0
    # features come from the cache the second time, with identical numbers
    again = bench.run(data, config, methods=["msp"], results_dir=out, cache_dir=tmp_path / "cache")
    assert again["methods"]["msp"]["unknown_auroc"] == payload["methods"]["msp"]["unknown_auroc"]


def _fake_neu(root: Path, per_type: int = 10) -> Path:
    from inspection.data.neu_surface import DEFECT_TYPES

    line = SyntheticLine("tile", size=48, seed=2)
    kinds = ("hole", "missing", "crack", "scratch", "stain", "hole")
    for c, cls in enumerate(DEFECT_TYPES):
        (root / cls).mkdir(parents=True)
        for n in range(1, per_type + 1):
            s = line.render(100 * c + n, kinds[c])
            cv2.imwrite(
                str(root / cls / f"{cls}_{n}.png"), cv2.cvtColor(s.image, cv2.COLOR_RGB2GRAY)
            )
    return root


@pytest.mark.slow
def test_neu_open_bench_writes_its_own_results(tmp_path: Path) -> None:
    from inspection.bench import openset_bench as bench
    from inspection.data.neu_surface import DEFECT_TYPES

    data = _fake_neu(tmp_path / "neu")
    config = TyperConfig(
        features=FeatureConfig(image_size=32, dihedral_views=1, random_views=0, backend="torch"),
        head=HeadConfig(epochs=2, hidden=16, embed_dim=4),
        calibration_folds=2,
    )
    out = tmp_path / "results"
    bench.run(
        data, config, methods=["msp", "knn"], results_dir=out, cache_dir=None, protocol="neu-open"
    )
    saved = json.loads((out / "neu-open.json").read_text())
    assert saved["protocol"] == "neu-open" and {"commit", "date", "machine"} <= set(saved)
    assert [f["unknown"] for f in saved["methods"]["knn"]["folds"]] == list(DEFECT_TYPES)
    assert set(bench.EXTRA) <= set(saved["methods"]["knn"])
    assert "NEU" in (out / "neu-open.md").read_text()


@pytest.mark.realdata
@pytest.mark.slow
def test_mt_open_fold_trains_on_real_tiles(mt_root: Path) -> None:
    """One real fold at low resolution with few views: the typer beats chance on known types."""
    from inspection.data.magnetic_tile import mt_open
    from inspection.openset.classifier import OpenSetTyper

    fold = mt_open(mt_root, size=128)[3]  # Fray unknown: the smallest class
    config = TyperConfig(
        features=FeatureConfig(image_size=128, dihedral_views=1, random_views=0),
        head=HeadConfig(epochs=10),
        calibration_folds=2,
    )
    typer = OpenSetTyper(config).fit(fold.train.images, fold.train.defect_types)
    known = np.array([t != fold.unknown for t in fold.test.defect_types])
    res = typer.predict(fold.test.images[known])
    truth = np.array(fold.test.defect_types)[known]
    accuracy = float(np.mean([r.label == t for r, t in zip(res, truth, strict=True)]))
    assert accuracy > 0.5  # four classes: chance is about 0.25
