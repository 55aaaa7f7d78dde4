"""Exploration for issue 22: multi-level view features of both open-set protocols, cached once.

Writes ``runs/explore/<protocol>-views.npy`` ((N, V, D) with levels blocks.4, blocks.5, blocks.6,
head, avg+max each) and ``<protocol>-ids.json``; the ad-hoc method comparisons read them.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from inspection.openset.config import FeatureConfig
from inspection.openset.features import FeatureExtractor

OUT = Path("runs/explore")
LEVELS = ("blocks.4", "blocks.5", "blocks.6", "head")


def main(protocol: str) -> None:
    if protocol == "mt-open":
        from inspection.data.magnetic_tile import mt_open

        folds = mt_open("/work/shared/data/magnetic_tile", size=256)
    else:
        from inspection.data.neu_surface import neu_open

        folds = neu_open("/work/shared/data/neu_surface", size=256)
    images: dict[str, np.ndarray] = {}
    types: dict[str, str] = {}
    for fold in folds:
        for s in (fold.train, fold.test):
            images.update(zip(s.ids, s.images, strict=True))
            types.update(zip(s.ids, s.defect_types, strict=True))
    ids = sorted(images)
    ext = FeatureExtractor(FeatureConfig(levels=LEVELS))
    t0 = time.time()

    def progress(stage: str, done: int, total: int) -> None:
        if done % 96 < 6:
            print(f"{stage} {done}/{total} {time.time() - t0:.0f}s", flush=True)

    feats = ext.extract_views(np.stack([images[i] for i in ids]), seed=0, progress=progress)
    OUT.mkdir(parents=True, exist_ok=True)
    np.save(OUT / f"{protocol}-views.npy", feats.astype(np.float32))
    (OUT / f"{protocol}-ids.json").write_text(json.dumps({"ids": ids, "types": types}))
    print("done", feats.shape, time.time() - t0)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    for p in sys.argv[1:]:
        main(p)
