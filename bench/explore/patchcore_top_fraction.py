"""Exploration, not a benchmark: could painted validation choose PatchCore's top fraction?

PatchCore's image score is the mean of the largest ``top_fraction`` of an image's patch
distances (default 1 %). On cached features the best fraction differed by set (5 % on mt-exp,
1 % elsewhere: ``bench/results/explore/patchcore-offline.md``), and choosing it per set from
test labels is not allowed. This asks whether a label-free rule could choose it: for the
``patchcore`` bundle of each suite set (``inspection bench suite`` keeps it under
``~/.cache/inspection/bench-bundles/suite/<set>/patchcore``; fitted on the product's 85 % fit
split), the patch distances of the held-out validation normals (``training.split_validation``,
seed 0: the images that set its thresholds), of defects painted onto them (``synthetic``: the
painter of ``score_mode: auto``; ``subtle``: the painter of ``detector: auto``) and of the test
images are computed once, and each fraction is scored by image AUROC. The rule would take the
fraction with the best painted AUROC; the test column only measures it.

    PYTHONPATH=. .venv/bin/python bench/explore/patchcore_top_fraction.py mvtec_screw elpv_solar mt-exp
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inspection.bench.report import markdown_table, stamp, write_results

OUT = Path("bench/results/explore")
BUNDLES = Path.home() / ".cache/inspection/bench-bundles/suite"
FRACTIONS = (0.002, 0.01, 0.02, 0.05, 0.1)


def patch_distances(det: Any, images: np.ndarray) -> torch.Tensor:
    """(N, P) distance of every patch of ``images`` to its nearest bank entry."""
    model = det.torch_model
    model.eval()
    bank = model.memory_bank
    bank_sq = (bank * bank).sum(1)
    out = []
    with torch.no_grad():
        for start in range(0, len(images), 16):
            feats = model.feature_extractor(det._prepare(images[start : start + 16]))
            feats = {k: model.feature_pooler(v) for k, v in feats.items()}
            emb = model.generate_embedding(feats)
            b, d, h, w = emb.shape
            p = emb.permute(0, 2, 3, 1).reshape(b, h * w, d)
            d2 = (p * p).sum(2)[:, :, None] - 2 * p @ bank.T + bank_sq[None, None]
            out.append(d2.min(2).values.clamp_min(0).sqrt())
    return torch.cat(out)


def top_means(dist: torch.Tensor) -> dict[float, np.ndarray]:
    n = dist.shape[1]
    return {f: dist.topk(max(1, int(n * f)), dim=1).values.mean(1).numpy() for f in FRACTIONS}


def main() -> None:
    from sklearn.metrics import roc_auc_score

    from inspection import training
    from inspection.bench.suite import DATASETS, load_dataset
    from inspection.validation import subtle_defects, synthetic_defects

    parser = argparse.ArgumentParser()
    parser.add_argument("sets", nargs="+")
    parser.add_argument("--data-root", default="../shared/data")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for name in args.sets:
        det = training.load_trained(BUNDLES / name / "patchcore").detector
        train, test = load_dataset(DATASETS[name], Path(args.data_root), det.config.image_size)
        _, val = training.split_validation(train, 0.15, 0)
        clean = top_means(patch_distances(det, val.images))
        painters = {
            "synthetic": synthetic_defects(val.images, 0)[0],
            "subtle": subtle_defects(val.images, copies=2, seed=0)[0],
        }
        for painter, painted in painters.items():
            dirty = top_means(patch_distances(det, painted))
            y = np.r_[np.zeros(len(val)), np.ones(len(painted))]
            rows.append(
                {"dataset": name, "judged_on": painter}
                | {f"top{f:g}": roc_auc_score(y, np.r_[clean[f], dirty[f]]) for f in FRACTIONS}
            )
        scores = top_means(patch_distances(det, test.images))
        rows.append(
            {"dataset": name, "judged_on": "test"}
            | {f"top{f:g}": roc_auc_score(test.labels, scores[f]) for f in FRACTIONS}
        )
        print(json.dumps(rows[-3:]), flush=True)
    cols = ["dataset", "judged_on", *(f"top{f:g}" for f in FRACTIONS)]
    about = (
        "Image AUROC of PatchCore's top-fraction mean score, per fraction, on painted held-out "
        "validation normals (label-free) and on the test set (measurement only); method: "
        "`bench/explore/patchcore_top_fraction.py`, suite bundles at 256 px.\n\n"
    )
    write_results(
        "patchcore-top-fraction", {**stamp(), "rows": rows}, about + markdown_table(rows, cols), OUT
    )


if __name__ == "__main__":
    main()
