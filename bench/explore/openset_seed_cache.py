"""Exploration for issue 22: reuse the multi-level exploration features as the bench cache.

``openset_features.py`` extracted blocks.4, blocks.5, blocks.6 and head (avg+max) for every
image of both protocols with the typer's own extractor. The default ``FeatureConfig`` pools the
first three of those, i.e. the first 1248 columns. This writes them under the key
``inspection.bench.openset_bench`` looks for, after checking that the default extractor gives
the same numbers on the first images (same seeded views).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from inspection.bench.openset_bench import _cache_key
from inspection.openset.config import TyperConfig
from inspection.openset.features import FeatureExtractor

OUT = Path("runs/explore")
CACHE = Path("runs/typing-cache")


def main(protocol: str, check: int = 3) -> None:
    config = TyperConfig()
    feats = np.load(OUT / f"{protocol}-views.npy", mmap_mode="r")
    meta = json.loads((OUT / f"{protocol}-ids.json").read_text())
    ext = FeatureExtractor(config.features)
    d = ext.out_dim
    from inspection.data.imageset import read_sample

    images = np.stack([read_sample(i, None, 256, "stretch")[0] for i in meta["ids"][:check]])
    fresh = ext.extract_views(images, seed=config.seed)
    diff = float(np.abs(fresh - feats[:check, :, :d]).max())
    scale = float(np.abs(fresh).max())
    print(protocol, "max abs diff", diff, "of", scale)
    if diff > 1e-3 * scale:
        raise SystemExit("cached features differ from the default extractor's; not reused")
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"features-{_cache_key(config, meta['ids'])}.npy"
    np.save(path, np.ascontiguousarray(feats[:, :, :d]))
    print("wrote", path)


if __name__ == "__main__":
    for p in sys.argv[1:]:
        main(p)
