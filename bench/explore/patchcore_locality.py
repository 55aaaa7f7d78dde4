"""Exploration (CPU): can PatchCore use two localities at once instead of choosing one?

The GPU sweep (``bench/results/explore/patchcore-gpu-sweep.md``) found one large, set-dependent
effect: no neighbourhood averaging (``pool1``) lifts ``mvtec_screw`` and drops ``mt-exp``, while
the default 3 x 3 averaging does the opposite. Variants here keep both:

* ``p1``, ``p3``: one bank of 1 x 1 / 3 x 3 neighbourhood features (reference rows);
* ``cat13``: one bank of both concatenated (304-d; coreset on a 152-d random projection);
* ``patchz-max`` / ``patchz-mean``: two banks; each patch distance map standardised by the
  held-out normals' patch distances (mean, std over all their patches), combined per patch,
  then the usual image score (mean of the largest 1 %);
* ``imgz-max`` / ``imgz-mean``: the two detectors' image scores standardised on the held-out
  normals and combined.

Runs on the output of ``patchcore_gpu_prep.py`` (``.gpu/``); uses the sweep's feature code and
the product's ``greedy_coreset``. Test labels choose nothing; they only measure.

    cp bench/explore/patchcore_gpu_sweep.py .gpu/
    PYTHONPATH=. .venv/bin/python bench/explore/patchcore_locality.py
"""

import json
import math
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

os.environ.setdefault("DEV", "cpu")
# the sweep reads lite0.pt next to itself: run the copy in the prep directory
sys.path.insert(0, os.environ.get("GPU_DIR", ".gpu"))
import patchcore_gpu_sweep as sw

from inspection.detectors.patchcore import Cover, greedy_cover

SIDE = int(os.environ.get("SIDE", "256"))
SETS = tuple(os.environ.get("SETS", "mvtec_screw,elpv_solar,mt-exp").split(","))
OUT = Path(os.environ.get("OUT", "/tmp/pl"))
DATA = Path(os.environ.get("GPU_DIR", ".gpu"))
T0 = time.time()
torch.set_num_threads(2)


def log(*a: object) -> None:
    print(f"[{time.time() - T0:6.1f}s]", *a, flush=True)


def fit_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) indices of ``n`` training normals: the product's 85 / 15 split, seed 0."""
    order = np.random.default_rng(0).permutation(n)
    n_val = max(1, round(n * 0.15))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def cover_of(flat: torch.Tensor, proj: int = 0) -> Cover:
    """Greedy cover (seed 0) of the pooled patches ``flat`` (N, D) at the product's default bank
    size (``PatchCore.bank_size``: 10 % of the pool, at most 4096)."""
    return greedy_cover(flat, min(4096, math.ceil(0.1 * len(flat))), projection_dim=proj, seed=0)


def suite_features(name: str, side: int = SIDE) -> tuple[Any, Any, Any, np.ndarray]:
    """Lite0 block outputs of one prepared suite set: (fit, held-out normals, test) as the
    sweep's ``blocks`` gives them (the product's 85 / 15 split, seed 0), and the test labels."""
    d = pickle.loads((DATA / f"{name}-{side}.pkl").read_bytes())
    train, test = sw.decode(d["train"]), sw.decode(d["test"])
    labels = np.asarray(d["labels"]).astype(int)
    fit_i, val_i = fit_split(len(train))
    mfit = sw.blocks(train[fit_i], d["standardize"])
    mval = sw.blocks(train[val_i], d["standardize"])
    return mfit, mval, sw.blocks(test, d["standardize"]), labels


def bank_of(flat: torch.Tensor, proj: int) -> torch.Tensor:
    return flat[cover_of(flat, proj).indices].contiguous()


def main() -> None:
    results = (
        json.loads((OUT / f"locality-{SIDE}.json").read_text())
        if (OUT / f"locality-{SIDE}.json").exists()
        else {}
    )
    for name in SETS:
        if name in results:
            continue
        mfit, mval, mtest, labels = suite_features(name)
        log(name, "features")
        dists = {}
        for pool in (1, 3):
            f, v, t = (sw.embed(m, (2, 4), pool) for m in (mfit, mval, mtest))
            bank = bank_of(f.reshape(-1, f.shape[-1]), 0)
            dists[pool] = (sw.knn(v, bank), sw.knn(t, bank))
            log(name, f"p{pool}", "done")
        f = torch.cat([sw.embed(mfit, (2, 4), 1), sw.embed(mfit, (2, 4), 3)], 2)
        bank = bank_of(f.reshape(-1, f.shape[-1]), 152)
        del f
        v = torch.cat([sw.embed(mval, (2, 4), 1), sw.embed(mval, (2, 4), 3)], 2)
        t = torch.cat([sw.embed(mtest, (2, 4), 1), sw.embed(mtest, (2, 4), 3)], 2)
        dists["cat13"] = (sw.knn(v, bank), sw.knn(t, bank))
        log(name, "cat13 done")
        res: dict[str, float] = {}
        img: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for key, (dv, dt) in dists.items():
            label = f"p{key}" if isinstance(key, int) else key
            img[label] = (sw.image_scores(dv)["top1"], sw.image_scores(dt)["top1"])
            res[label] = sw.auroc(labels, img[label][1])
            res[label + ":val_max"] = float(img[label][0].max())
        zs = []
        for pool in (1, 3):
            dv, dt = dists[pool]
            mu, sd = dv.mean(), dv.std()
            zs.append(((dv - mu) / sd, (dt - mu) / sd))
        for how, op in (("max", torch.maximum), ("mean", lambda a, b: (a + b) / 2)):
            res[f"patchz-{how}"] = sw.auroc(labels, sw.image_scores(op(zs[0][1], zs[1][1]))["top1"])

            def z(pair: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
                v, t = pair
                return (t - v.mean()) / (v.std() + 1e-9)

            res[f"imgz-{how}"] = sw.auroc(labels, op(z(img["p1"]), z(img["p3"])))
        results[name] = res
        log(name, {k: round(v, 4) for k, v in res.items()})
        (OUT / f"locality-{SIDE}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
