"""Exploration (CPU), second step of ``patchcore_locality.py``: the unit each bank's patch
distances are put in before averaging (held-out normals' vs the training patches' own coverage
distances from the greedy cover; standardised vs only scaled) and banks capped at half the size.
Results in ``bench/results/explore/patchcore-locality.md``.

    cp bench/explore/patchcore_gpu_sweep.py .gpu/
    PYTHONPATH=. .venv/bin/python bench/explore/patchcore_locality_units.py
"""

import json
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("DEV", "cpu")
sys.path.insert(0, ".gpu")
import patchcore_gpu_sweep as sw

torch.set_num_threads(2)
T0 = time.time()
SIDE = int(os.environ.get("SIDE", "256"))
SETS = os.environ.get("SETS", "mvtec_screw,mt-exp").split(",")


def log(*a):
    print(f"[{time.time() - T0:6.1f}s]", *a, flush=True)


@torch.no_grad()
def coreset(x, k, seed=0):
    n = len(x)
    sq = (x * x).sum(1)
    idx = int(torch.randint(n, (1,), generator=torch.Generator().manual_seed(seed)))
    mind = torch.full((n,), float("inf"))
    sel = torch.empty(k, dtype=torch.long)
    dist = torch.empty(n)
    for i in range(k):
        sel[i] = idx
        torch.mv(x, x[idx], out=dist)
        dist.mul_(-2.0).add_(sq).add_(sq[idx])
        torch.minimum(mind, dist, out=mind)
        idx = int(torch.argmax(mind))
    return sel, mind.clamp_min(0).sqrt()


out = {}
for name in SETS:
    d = pickle.loads(Path(f".gpu/{name}-{SIDE}.pkl").read_bytes())
    train, test = sw.decode(d["train"]), sw.decode(d["test"])
    labels = np.asarray(d["labels"]).astype(int)
    order = np.random.default_rng(0).permutation(len(train))
    n_val = max(1, round(len(train) * 0.15))
    fit_i, val_i = np.sort(order[n_val:]), np.sort(order[:n_val])
    mfit, mval, mtest = (
        sw.blocks(train[i] if i is not None else test, d["standardize"])
        for i in (fit_i, val_i, None)
    )
    res = {}
    D = {}
    for pool in (1, 3):
        f = sw.embed(mfit, (2, 4), pool)
        flat = f.reshape(-1, f.shape[-1])
        del f
        k = min(4096, int(np.ceil(0.1 * len(flat))))
        sel, cover = coreset(flat, k)
        v, t = sw.embed(mval, (2, 4), pool), sw.embed(mtest, (2, 4), pool)
        for nb in (k, k // 2):
            bank = flat[sel[:nb]].contiguous()
            D[(pool, nb == k)] = (sw.knn(v, bank), sw.knn(t, bank), cover)
        log(name, pool, "done", "cover mean/std", float(cover.mean()), float(cover.std()))
    for full in (True, False):
        tag = "" if full else "-half"
        for stats in ("val", "pool"):
            zs = []
            for pool in (1, 3):
                dv, dt, cover = D[(pool, full)]
                mu, sd = (dv.mean(), dv.std()) if stats == "val" else (cover.mean(), cover.std())
                zs.append((dt - mu) / sd)
            res[f"patchz-mean-{stats}{tag}"] = sw.auroc(
                labels, sw.image_scores((zs[0] + zs[1]) / 2)["top1"]
            )
            # scale-only (divide by mean, no centring)
            zs = []
            for pool in (1, 3):
                dv, dt, cover = D[(pool, full)]
                mu = dv.mean() if stats == "val" else cover.mean()
                zs.append(dt / mu)
            res[f"patchs-mean-{stats}{tag}"] = sw.auroc(
                labels, sw.image_scores((zs[0] + zs[1]) / 2)["top1"]
            )
        for pool in (1, 3):
            res[f"p{pool}{tag}"] = sw.auroc(labels, sw.image_scores(D[(pool, full)][1])["top1"])
    out[name] = res
    log(name, {k: round(v, 4) for k, v in res.items()})
    Path(f"/tmp/pl/loc2-{SIDE}.json").write_text(json.dumps(out, indent=1))
