"""Exploration (CPU), second step of ``patchcore_locality.py``: the unit each bank's patch
distances are put in before averaging (held-out normals' vs the training patches' own coverage
distances from the greedy cover; standardised vs only scaled) and banks capped at half the size.
Results in ``bench/results/explore/patchcore-locality.md``.

    cp bench/explore/patchcore_gpu_sweep.py .gpu/
    PYTHONPATH=. .venv/bin/python bench/explore/patchcore_locality_units.py
"""

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import patchcore_locality as pl  # the sweep's features and the shared loader

sw = pl.sw
T0 = time.time()
SIDE = int(os.environ.get("SIDE", "256"))
SETS = os.environ.get("SETS", "mvtec_screw,mt-exp").split(",")


def log(*a):
    print(f"[{time.time() - T0:6.1f}s]", *a, flush=True)


out = {}
for name in SETS:
    mfit, mval, mtest, labels = pl.suite_features(name, SIDE)
    res = {}
    D = {}
    for pool in (1, 3):
        f = sw.embed(mfit, (2, 4), pool)
        flat = f.reshape(-1, f.shape[-1])
        del f
        sel, cover = pl.cover_of(flat)
        k = len(sel)
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
