"""Exploration (CPU), second step of ``patchcore_knn_global.py``: would the label-free painted
validation that ``detector: auto`` uses choose the image-level (SPADE) kNN score where it helps?

``patchcore_knn_global.py`` found that averaging the product's PatchCore score with a whole-image
kNN score (both standardised on the held-out normals) lifts mt-exp (0.930 -> 0.953) but costs
elpv_solar 0.009 and the screw 0.002, so it cannot be every set's default. Here the held-out
normals get two painted copies each (``inspection.validation.subtle_defects``, as ``train_auto``
paints them) and each of ``product``, ``global``, ``mean`` and ``max`` is scored by its image
AUROC of clean against painted held-out images; ``chosen`` is the best of them (ties: the
earlier, ``product`` first). Test labels choose nothing; they only measure.

    PYTHONPATH=.:bench/explore .venv/bin/python bench/explore/patchcore_global_select.py
"""

import json
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from patchcore_knn_global import bank_of, image_knn, resumed, same_groups, zscore
from patchcore_locality import DATA, fit_split, log, sw

from inspection.validation import subtle_defects

SIDE = int(os.environ.get("SIDE", "256"))
SETS = os.environ.get("SETS", "mvtec_screw,elpv_solar,mt-exp").split(",")
OUT = Path(os.environ.get("OUT", "/tmp/pl/global-select.json"))
VARIANTS = ("product", "global", "mean", "max")


def main() -> None:
    results = resumed(OUT)
    for name in [s for s in SETS if s not in results]:
        d = pickle.loads((DATA / f"{name}-{SIDE}.pkl").read_bytes())
        train, test = sw.decode(d["train"]), sw.decode(d["test"])
        labels = np.asarray(d["labels"]).astype(int)
        fit_i, val_i = fit_split(len(train))
        rgb = np.repeat(train[val_i][..., None], 3, axis=3)
        painted = subtle_defects(rgb, copies=2, seed=0)[0][..., 0]
        maps = {
            part: sw.blocks(images, d["standardize"])
            for part, images in (
                ("fit", train[fit_i]),
                ("val", train[val_i]),
                ("painted", painted),
                ("test", test),
            )
        }
        log(name, "features")
        patch: dict[str, torch.Tensor] = {}
        pooled: dict[str, torch.Tensor] = {}
        for pool in (3, 1):
            bank, unit, fit_mean = bank_of(maps["fit"], pool)
            if pool == 3:
                pooled["fit"] = fit_mean
            for part in ("val", "painted", "test"):
                e = sw.embed(maps[part], (2, 4), pool)
                if pool == 3:
                    pooled[part] = e.mean(1)
                dist = sw.knn(e, bank) / unit / 2  # the mean of the two banks' scores
                patch[part] = patch[part] + dist if part in patch else dist
            log(name, f"p{pool} done")
        scores: dict[str, dict[str, torch.Tensor]] = {}
        for part in ("val", "painted", "test"):
            scores[part] = {
                "product": sw.image_scores(patch[part])["top1"],
                "global": image_knn(pooled["fit"], pooled[part], 1),
            }
        for part in ("painted", "test"):
            zp = zscore(scores["val"]["product"], scores[part]["product"])
            zg = zscore(scores["val"]["global"], scores[part]["global"])
            scores[part]["mean"], scores[part]["max"] = (zp + zg) / 2, torch.maximum(zp, zg)
        zv = [zscore(scores["val"][k], scores["val"][k]) for k in ("product", "global")]
        scores["val"]["mean"], scores["val"]["max"] = (zv[0] + zv[1]) / 2, torch.maximum(*zv)
        target = np.r_[np.zeros(len(val_i)), np.ones(len(painted))].astype(int)
        res: dict[str, object] = {}
        painted_auroc = {
            v: sw.auroc(target, torch.cat([scores["val"][v], scores["painted"][v]]))
            for v in VARIANTS
        }
        test_auroc = {v: sw.auroc(labels, scores["test"][v]) for v in VARIANTS}
        chosen = max(VARIANTS, key=lambda v: (painted_auroc[v], -VARIANTS.index(v)))
        res = {"painted": painted_auroc, "test": test_auroc, "chosen": chosen}
        same = same_groups(name)
        if same is not None:
            res["test_same_groups"] = {
                v: sw.auroc(labels[same], scores["test"][v][same]) for v in VARIANTS
            }
        results[name] = res
        log(name, json.dumps(res))
        OUT.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
