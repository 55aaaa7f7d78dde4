"""Exploration (CPU): does PatchCore on mt-exp suffer from the per-image change of scale that
any squaring of its tiles causes?

mt-exp's tiles run from 124 to 598 px wide and 0.36 to 2.6 in w / h. Stretched to 256 x 256
(the suite), one image's texture is squeezed 2.3x across and not at all down; letterboxed
(``--fit auto``, the product's choice), every image keeps its shape but is scaled by 256 over its
own long side, so the same texture appears at scales up to 2.4x apart. A nearest-neighbour bank
of patches compares textures at the scale they were seen at. Here each tile is scaled by one
factor for the whole set (``scale<f>``: ``f`` times its own pixels, aspect kept, no padding) and
Lite0 runs on it as it is (fully convolutional, batch 1), so every tile's texture has the same
scale. ``stretch256`` runs the same code on the stretched 256 px squares, as a reference.

PatchCore as shipped otherwise: blocks.2 + blocks.4, a fine (1 x 1) and a context (3 x 3) bank,
each a greedy cover (4096 cap, seed 0) in units of its mean coverage distance, averaged; image
score the mean of the largest 1 % of patch distances; photometric standardisation (mt-exp's
exposure spread turns it on). Product split of the training normals (85 / 15, seed 0). Test
labels choose nothing; they only measure.

    cp bench/explore/patchcore_gpu_sweep.py .gpu/   # plus .gpu/lite0.pt, see patchcore_gpu_prep
    PYTHONPATH=.:bench/explore .venv/bin/python bench/explore/patchcore_scale.py
"""

import json
import os
from pathlib import Path

import cv2
import numpy as np
import torch

os.environ.setdefault("DEV", "cpu")
from patchcore_locality import cover_of, fit_split, log, sw

from inspection.data.magnetic_tile import NORMAL_CLASS, TEST_GROUPS, TRAIN_GROUPS, scan

VARIANTS = tuple(os.environ.get("VARIANTS", "stretch256,scale0.6,scale1").split(","))
OUT = Path(os.environ.get("OUT", "/tmp/ps"))


def load(variant: str, paths: list[Path]) -> list[np.ndarray]:
    """Gray uint8 images of one variant."""
    out = []
    for p in paths:
        im = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if variant.startswith("stretch"):
            side = int(variant.removeprefix("stretch"))
            im = cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA)
        else:
            f = float(variant.removeprefix("scale"))
            h, w = im.shape
            size = (max(32, round(w * f)), max(32, round(h * f)))
            im = cv2.resize(im, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
        out.append(im)
    return out


def patches(images: list[np.ndarray], pool: int) -> list[torch.Tensor]:
    """Per image (P, 152) patch features (blocks.2 + blocks.4, ``pool`` x ``pool`` averaging)."""
    res = []
    for im in images:
        maps = sw.blocks(im[None], True)
        res.append(sw.embed(maps, (2, 4), pool)[0])
    return res


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "scale.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    items = scan("../shared/data/magnetic_tile")
    train = [t.image for t in items if t.cls == NORMAL_CLASS and t.group in TRAIN_GROUPS]
    test_items = [
        t
        for t in items
        if (t.cls == NORMAL_CLASS and t.group in TEST_GROUPS) or t.cls != NORMAL_CLASS
    ]
    labels = np.array([int(t.cls != NORMAL_CLASS) for t in test_items])
    fit_paths = [train[i] for i in fit_split(len(train))[0]]
    for variant in VARIANTS:
        if variant in results:
            continue
        fit_im, test_im = load(variant, fit_paths), load(variant, [t.image for t in test_items])
        log(variant, "loaded", fit_im[0].shape)
        per_bank = []
        for pool in (1, 3):
            flat = torch.cat(patches(fit_im, pool))
            cover = cover_of(flat)
            bank = flat[cover.indices].contiguous()
            unit = float(cover.distances.mean())
            log(variant, f"p{pool} bank of {len(flat)} patches")
            del flat
            per_bank.append([sw.knn(t[None], bank)[0] / unit for t in patches(test_im, pool)])
        res = {}
        for frac in (0.01, 0.05):
            scores = torch.stack(
                [
                    torch.topk((a + b) / 2, max(1, int(len(a) * frac))).values.mean()
                    for a, b in zip(*per_bank, strict=True)
                ]
            )
            res[f"top{frac * 100:g}"] = sw.auroc(labels, scores)
        results[variant] = res
        log(variant, res)
        path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
