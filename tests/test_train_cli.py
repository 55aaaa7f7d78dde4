"""``inspection train``: a plant's own folder of normal images -> a station bundle."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from inspection.cli import app
from inspection.runtime import OpenVinoModel
from tests.conftest import synthetic_set

runner = CliRunner()


def _write(folder: Path, images, prefix: str = "img") -> None:  # type: ignore[no-untyped-def]
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f"{prefix}{i:03d}.png"), image[..., ::-1])


def test_folder_of_normals_to_bundle_skipping_a_corrupt_file(tmp_path: Path) -> None:
    good = tmp_path / "good"
    _write(good / "2026-11-25", synthetic_set(64, 12, 0, seed=1).images)
    _write(good / "2026-11-26", synthetic_set(64, 8, 0, seed=2).images)
    (good / "2026-11-26" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "bundle"
    result = runner.invoke(app, ["train", str(good), "-d", "padim", "--quick", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "20 normal images" in result.output and "path:" in result.output
    model = OpenVinoModel(out)
    assert model.size == 64
    meta = json.loads((out / "model.json").read_text())
    assert meta["detector"] == "padim" and meta["n_train"] + meta["n_val"] == 20


def test_mvtec_root_is_evaluated_with_figures(tmp_path: Path) -> None:
    root = tmp_path / "part"
    _write(root / "train" / "good", synthetic_set(64, 16, 0, seed=1).images)
    test = synthetic_set(64, 4, 4, seed=2)
    _write(root / "test" / "good", test.images[:4])
    _write(root / "test" / "defect", test.images[4:])
    for i, mask in enumerate(test.masks[4:]):
        (root / "ground_truth" / "defect").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "ground_truth" / "defect" / f"img{i:03d}_mask.png"), mask * 255)
    out = tmp_path / "bundle"
    result = runner.invoke(app, ["train", str(root), "--quick", "-o", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "evaluation.json").read_text())
    assert 0.0 <= metrics["image_auroc"] <= 1.0
    meta = json.loads((out / "model.json").read_text())
    chosen = meta["detector"]  # the default is detector auto
    assert meta["auto_selection"]["candidates"][meta["auto_selection"]["chosen"]]
    assert "detector auto:" in result.output
    assert (out / "report" / f"{chosen}_curves.png").is_file()
    assert (out / "report" / f"{chosen}_overlays.png").is_file()


def test_long_narrow_parts_are_padded_and_evaluated_on_their_own_pixels(tmp_path: Path) -> None:
    """``--fit auto`` (default) letterboxes 1:2 parts; the bundle records it, metrics and
    overlays use each image's valid region only."""
    root = tmp_path / "part"
    _write(root / "train" / "good", synthetic_set(64, 16, 0, seed=1).images[:, 16:48])
    test = synthetic_set(64, 4, 4, seed=2)
    _write(root / "test" / "good", test.images[:4, 16:48])
    _write(root / "test" / "defect", test.images[4:, 16:48])
    (root / "ground_truth" / "defect").mkdir(parents=True)
    for i, mask in enumerate(test.masks[4:, 16:48]):
        path = root / "ground_truth" / "defect" / f"img{i:03d}_mask.png"
        cv2.imwrite(str(path), mask.astype(np.uint8) * 255)
    out = tmp_path / "bundle"
    result = runner.invoke(app, ["train", str(root), "-d", "padim", "--quick", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "fit: pad (chosen from the images' shapes)" in " ".join(result.output.split())
    assert json.loads((out / "model.json").read_text())["input"]["fit"] == "pad"
    assert OpenVinoModel(out).fit == "pad"
    metrics = json.loads((out / "evaluation.json").read_text())
    assert 0.0 <= metrics["pixel_auroc"] <= 1.0
    assert (out / "report" / "padim_overlays.png").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-d", "nope"], "unknown detector"),
        (["--precision", "int4"], "precision"),
        (["-d", "padim", "--config", "{cfg}"], "bogus"),
        (["-d", "padim", "--size", "7"], "image_size"),
        (["--size", "128"], "need -d"),
        (["--fit", "crop"], "fit"),
    ],
)
def test_bad_requests_fail_clearly(tmp_path: Path, args: list[str], message: str) -> None:
    good = tmp_path / "good"
    _write(good, synthetic_set(64, 4, 0, seed=1).images)
    cfg = tmp_path / "padim.yaml"
    cfg.write_text("n_features: 3\nbogus: 1\n")
    args = [a.replace("{cfg}", str(cfg)) for a in args]
    result = runner.invoke(app, ["train", str(good), "--quick", "-o", str(tmp_path / "b"), *args])
    assert result.exit_code != 0
    assert message in result.output


def test_refuses_a_folder_without_images_or_a_used_output(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = runner.invoke(
        app, ["train", str(tmp_path / "empty"), "--quick", "-o", str(tmp_path / "b")]
    )
    assert result.exit_code == 2 and "no images" in result.output
    used = tmp_path / "used"
    used.mkdir()
    (used / "model.json").write_text("{}")
    result = runner.invoke(app, ["train", str(tmp_path / "empty"), "-o", str(used)])
    assert result.exit_code != 0 and "not empty" in result.output
    assert (used / "model.json").read_text() == "{}"


def test_three_images_are_refused_not_trained(tmp_path: Path) -> None:
    good = tmp_path / "good"
    _write(good, synthetic_set(64, 3, 0, seed=1).images)
    for args in (["-d", "padim"], []):
        out = tmp_path / f"b{len(args)}"
        result = runner.invoke(app, ["train", str(good), "--quick", "-o", str(out), *args])
        assert result.exit_code == 2, result.output
        assert "too few" in result.output and not (out / "model.json").exists()


def test_few_held_out_images_warn_on_the_console(tmp_path: Path) -> None:
    good = tmp_path / "good"
    _write(good, synthetic_set(64, 12, 0, seed=1).images)
    out = tmp_path / "bundle"
    result = runner.invoke(app, ["train", str(good), "-d", "padim", "--quick", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "held-out" in result.output
