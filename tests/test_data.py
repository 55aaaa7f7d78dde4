"""Datasets: the synthetic line, MVTec-layout folders, the magnetic-tile protocols."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from inspection.data.folder import load_mvtec_folder
from inspection.data.imageset import read_image
from inspection.data.synthetic import DEFECT_TYPES, FAMILIES, SyntheticLine
from inspection.errors import DatasetError, ImageDecodeError


@pytest.mark.parametrize("family", FAMILIES)
def test_synthetic_is_deterministic_with_exact_masks(family: str) -> None:
    a = SyntheticLine(family, size=96, seed=3)
    b = SyntheticLine(family, size=96, seed=3)
    for kind in (None, *DEFECT_TYPES):
        x, y = a.render(5, kind), b.render(5, kind)
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.mask, y.mask)
        assert x.image.shape == (96, 96, 3) and x.image.dtype == np.uint8
        assert x.mask.any() == (kind is not None)
        assert x.defect_type == kind
    assert not np.array_equal(a.render(1, None).image, a.render(2, None).image)


def test_synthetic_defect_changes_pixels_inside_mask() -> None:
    line = SyntheticLine("disc", size=128, seed=0)
    good, bad = line.render(9, None), line.render(9, "hole")
    diff = np.abs(good.image.astype(int) - bad.image.astype(int)).sum(-1)
    assert diff[bad.mask].mean() > 5 * diff[~bad.mask].mean()


def test_synthetic_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="family"):
        SyntheticLine("gear")
    with pytest.raises(ValueError, match="defect types"):
        SyntheticLine("disc", defect_types=["dent"])


def _write_mvtec(root: Path) -> None:
    line = SyntheticLine("tile", size=64, seed=1)
    (root / "train" / "good").mkdir(parents=True)
    (root / "test" / "good").mkdir(parents=True)
    (root / "test" / "crack").mkdir(parents=True)
    (root / "ground_truth" / "crack").mkdir(parents=True)
    for i, s in enumerate(line.normals(4)):
        cv2.imwrite(str(root / "train" / "good" / f"{i:03d}.png"), s.image)
    cv2.imwrite(str(root / "test" / "good" / "000.png"), line.render(50, None).image)
    crack = line.render(51, "crack")
    cv2.imwrite(str(root / "test" / "crack" / "000.png"), crack.image)
    cv2.imwrite(
        str(root / "ground_truth" / "crack" / "000_mask.png"), crack.mask.astype(np.uint8) * 255
    )
    (root / "train" / "good" / "999.png").write_bytes(b"\x89PNG truncated")


def test_mvtec_folder_loads_and_skips_corrupt_files(tmp_path: Path) -> None:
    _write_mvtec(tmp_path)
    train, test = load_mvtec_folder(tmp_path, size=32)
    assert len(train) == 4  # the truncated file is skipped, not fatal
    assert test.defect_types == ["crack", "good"]
    assert test.masks[0].any() and not test.masks[1].any()
    assert test.images.shape == (2, 32, 32, 3)


def test_bad_inputs_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="MVTec layout"):
        load_mvtec_folder(tmp_path)
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageDecodeError):
        read_image(bad)
    with pytest.raises(ImageDecodeError):
        read_image(tmp_path / "missing.png")


@pytest.mark.realdata
def test_mt_exp_protocol_counts(mt_root: Path) -> None:
    from inspection.data.magnetic_tile import mt_exp

    train, test = mt_exp(mt_root, size=64)
    assert len(train) == 634
    assert int((test.labels == 0).sum()) == 318
    assert int((test.labels == 1).sum()) == 392
    assert (
        test.masks[test.labels == 1].any(axis=(1, 2)).mean() > 0.8
    )  # tiny blowholes vanish at 64 px
    from inspection.data.magnetic_tile import same_group_subset

    idx = same_group_subset(test)  # both classes from the test normals' groups only
    assert int((test.labels[idx] == 0).sum()) == 318
    assert int((test.labels[idx] == 1).sum()) == 132


def test_group_of_reads_the_acquisition_group() -> None:
    from inspection.data.magnetic_tile import group_of

    assert group_of("/d/MT_Crack/Imgs/exp5_num_123.jpg") == 5
    assert group_of("synthetic-3") is None


@pytest.mark.realdata
def test_mt_open_folds(mt_root: Path) -> None:
    from inspection.data.magnetic_tile import DEFECT_CLASSES, mt_open

    folds = mt_open(mt_root, size=16)
    assert [f.unknown for f in folds] == list(DEFECT_CLASSES)
    for fold in folds:
        assert fold.unknown not in fold.train.defect_types
        assert fold.test.defect_types.count(fold.unknown) > 0


def _fake_neu(root: Path, per_type: int = 10) -> Path:
    from inspection.data.neu_surface import DEFECT_TYPES

    for c, cls in enumerate(DEFECT_TYPES):
        (root / cls).mkdir(parents=True)
        for n in range(1, per_type + 1):
            image = np.full((20, 20), 10 * c + n, np.uint8)
            cv2.imwrite(str(root / cls / f"{cls}_{n}.png"), image)
    return root


def test_neu_open_split_follows_the_protocol(tmp_path: Path) -> None:
    from inspection.data.neu_surface import DEFECT_TYPES, neu_open

    folds = neu_open(_fake_neu(tmp_path / "neu"), size=16)
    assert [f.unknown for f in folds] == list(DEFECT_TYPES)
    for fold in folds:
        assert fold.unknown not in fold.train.defect_types
        assert fold.test.defect_types.count(fold.unknown) == 10  # every image of the held-out type
        for ident in fold.train.ids:
            assert int(Path(ident).stem.rsplit("_", 1)[1]) % 10 not in (0, 3, 7)
        known_test = [
            i
            for i, t in zip(fold.test.ids, fold.test.defect_types, strict=True)
            if t != fold.unknown
        ]
        assert len(known_test) == 5 * 3  # numbers 3, 7, 10 of each known type
        assert fold.train.images.shape == (35, 16, 16, 3)


@pytest.mark.realdata
def test_neu_open_on_real_data(neu_root: Path) -> None:
    from inspection.data.neu_surface import neu_open

    folds = neu_open(neu_root, size=16)
    assert len(folds) == 6
    assert all(len(f.train.ids) == 1050 and len(f.test.ids) == 750 for f in folds)
