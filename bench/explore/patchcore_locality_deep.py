"""Exploration (CPU), third step of ``patchcore_locality.py``: the fine bank (``blocks.2`` +
``blocks.4``, no averaging) next to a deeper context bank (``blocks.5`` added, 3 x 3 averaged,
344-d), the GPU sweep's best single setting on mt-exp; each bank's distances divided by its mean
coverage distance, as the product does. Results in
``bench/results/explore/patchcore-locality.md``.

    cp bench/explore/patchcore_gpu_sweep.py .gpu/
    PYTHONPATH=. .venv/bin/python bench/explore/patchcore_locality_deep.py
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
SETS = os.environ.get("SETS", "mvtec_screw,mt-exp,elpv_solar").split(",")


def log(*a):
    print(f"[{time.time() - T0:6.1f}s]", *a, flush=True)


out = (
    json.loads(Path(os.environ.get("OUT", "/tmp/pl") + "/loc3.json").read_text())
    if Path(os.environ.get("OUT", "/tmp/pl") + "/loc3.json").exists()
    else {}
)
for name in SETS:
    if name in out:
        continue
    mfit, _, mtest, labels = pl.suite_features(name, 256)
    D = {}
    for key, layers, pool in (("L24p1", (2, 4), 1), ("L24p3", (2, 4), 3), ("L245p3", (2, 4, 5), 3)):
        f = sw.embed(mfit, layers, pool)
        flat = f.reshape(-1, f.shape[-1])
        del f
        sel, cover = pl.cover_of(flat)
        t = sw.embed(mtest, layers, pool)
        D[key] = sw.knn(t, flat[sel].contiguous()) / cover.mean()
        del flat
        log(name, key, "done")
    res = {}

    def a(x, labels=labels):
        return sw.auroc(labels, sw.image_scores(x)["top1"])

    for k, dist in D.items():
        res[k] = a(dist)
    res["fine+ctx (adopted)"] = a((D["L24p1"] + D["L24p3"]) / 2)
    res["fine+deep"] = a((D["L24p1"] + D["L245p3"]) / 2)
    res["fine+ctx+deep"] = a((D["L24p1"] + D["L24p3"] + D["L245p3"]) / 3)
    res["ctx+deep"] = a((D["L24p3"] + D["L245p3"]) / 2)
    out[name] = res
    log(name, {k: round(v, 4) for k, v in res.items()})
    Path(os.environ.get("OUT", "/tmp/pl") + "/loc3.json").write_text(json.dumps(out, indent=1))
