"""Exploration (CPU): two PatchCore levers not yet measured, on all three suite sets at once.

* ``knn<k>``: each patch scored by the mean distance to its ``k`` nearest bank rows instead of
  the nearest one (both banks, the product's units), then the product's image score (mean of
  the largest 1 % patch scores).
* ``global``: SPADE's image stage (Cohen & Hoshen, "Sub-Image Anomaly Detection with Deep
  Pyramid Correspondences", 2020): each image's patch embeddings averaged into one vector, the
  image score its mean distance to the ``k`` nearest training images' vectors. Alone, and
  combined with the product's patch score after standardising both on the held-out normals
  (mean or maximum of the two z-scores): a whole-image change (uneven texture, a
  missing region) can leave every single patch near some training patch.

The reference row ``product`` is the product's default: context bank (3 x 3) and fine bank
(1 x 1), each distance divided by its bank's mean coverage distance, averaged per patch.
Product 85 / 15 split, coreset seed 0. Test labels choose nothing; they only measure.

    PYTHONPATH=.:bench/explore .venv/bin/python bench/explore/patchcore_knn_global.py
"""

import json
import os
from pathlib import Path

import numpy as np
import torch
from patchcore_locality import cover_of, log, suite_features, sw

SIDE = int(os.environ.get("SIDE", "256"))
SETS = os.environ.get("SETS", "mvtec_screw,elpv_solar,mt-exp").split(",")
OUT = Path(os.environ.get("OUT", "/tmp/pl/knn-global.json"))
KS = tuple(int(k) for k in os.environ.get("KS", "1,3,9").split(","))


def same_groups(name: str) -> np.ndarray | None:
    """mt-exp: indices of the test images shot in the test normals' exposure groups (the
    prepared test set is ``mt_exp``'s, in its order); other sets: ``None``."""
    if name != "mt-exp":
        return None
    from inspection.data.magnetic_tile import mt_exp, same_group_subset

    return same_group_subset(mt_exp(Path("../shared/data/magnetic_tile"), 16, "stretch")[1])


def zscore(val: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """``test`` standardised by the held-out normals' ``val`` scores."""
    return (test - val.mean()) / (val.std() + 1e-9)


def image_knn(bank: torch.Tensor, x: torch.Tensor, k: int) -> torch.Tensor:
    """(N,) mean distance of each row of ``x`` to its ``k`` nearest rows of ``bank``."""
    d = torch.cdist(x, bank)
    return d.topk(min(k, len(bank)), dim=1, largest=False).values.mean(1)


def resumed(out: Path) -> dict:
    """The results already written to ``out`` ({} on a first run): sets in it are skipped."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return json.loads(out.read_text()) if out.exists() else {}


def bank_of(maps: dict, pool: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(bank, unit, image vectors) of the fit images' Lite0 ``maps`` at neighbourhood ``pool``:
    the greedy cover at the product's bank size, its mean coverage distance (the product's unit
    for that bank's distances) and each image's patch embeddings averaged (N, D)."""
    f = sw.embed(maps, (2, 4), pool)
    vectors = f.mean(1)
    flat = f.reshape(-1, f.shape[-1])
    del f
    cover = cover_of(flat)
    return flat[cover.indices].contiguous(), cover.distances.mean(), vectors


def main() -> None:
    results = resumed(OUT)
    for name in [s for s in SETS if s not in results]:
        mfit, mval, mtest, labels = suite_features(name, SIDE)
        log(name, "features")
        per_k: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {k: [] for k in KS}
        pooled: dict[str, torch.Tensor] = {}
        for pool in (3, 1):
            bank, unit, fit_mean = bank_of(mfit, pool)
            if pool == 3:
                pooled["fit"] = fit_mean
            v, t = sw.embed(mval, (2, 4), pool), sw.embed(mtest, (2, 4), pool)
            if pool == 3:
                pooled["val"], pooled["test"] = v.mean(1), t.mean(1)
            for k in KS:
                per_k[k].append((sw.knn(v, bank, k) / unit, sw.knn(t, bank, k) / unit))
            log(name, f"p{pool} done")
        res: dict[str, float] = {}
        scores: dict[str, torch.Tensor] = {}
        img: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for k in KS:
            (v3, t3), (v1, t1) = per_k[k]
            img[k] = (
                sw.image_scores((v3 + v1) / 2)["top1"],
                sw.image_scores((t3 + t1) / 2)["top1"],
            )
            scores["product" if k == 1 else f"knn{k}"] = img[k][1]
        zp = zscore(*img[1])  # needs k = 1 in KS
        for k in (1, 3):
            gv = image_knn(pooled["fit"], pooled["val"], k)
            gt = image_knn(pooled["fit"], pooled["test"], k)
            scores[f"global{k}"] = gt
            zg = zscore(gv, gt)
            scores[f"product+global{k}:mean"] = (zp + zg) / 2
            scores[f"product+global{k}:max"] = torch.maximum(zp, zg)
        same = same_groups(name)
        for key, score in scores.items():
            res[key] = sw.auroc(labels, score)
            if same is not None:  # the exposure confound left out (mt-exp-confound.md)
                res[key + ":same_groups"] = sw.auroc(labels[same], score[same])
        results[name] = res
        log(name, {key: round(val, 4) for key, val in res.items()})
        OUT.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
