"""Exploration, not a benchmark: why do some detectors lose on letterboxed ``mt-exp``?

Letterboxed (the geometry ``inspection train`` gives mt-exp's tiles of varying aspect ratio),
CutPaste fell from 0.883 to 0.761 image AUROC in the suite, GANomaly from 0.878 to 0.834 and
OC-GAN from 0.772 to 0.712, while PaDiM and PatchCore held. A letterboxed image's valid box
covers 40-100 % of the square, so a score that responds to how much of the square is border
would rank normals by their shape, not by defects. This scores the suite's kept mt-exp bundles
(OpenVINO, as a station) on the test images and reports, per detector, the rank correlation of
the score with the box fraction among the test normals, and the image AUROC restricted to the
test images whose box fraction lies in the normals' interquartile range (a narrower range of
shapes). Test labels only measure.

    PYTHONPATH=.:bench/explore .venv/bin/python bench/explore/pad_box_fraction.py

writes ``bench/results/explore/pad-box-fraction.{json,md}``; needs the bundles of an
``inspection bench suite`` run (``~/.cache/inspection/bench-bundles/suite/mt-exp``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path("bench/results/explore")
DETECTORS = (
    "padim",
    "patchcore",
    "cutpaste",
    "ganomaly",
    "ocgan",
    "memae",
    "memae_feat",
    "mkd",
    "stfpm",
)

FINDING = (
    "Finding (2026-12-05): CutPaste's image-level score follows the shape (rank correlation "
    "+0.49 among the normals: the squarer the tile, the higher its score), and mt-exp's "
    "defective tiles are a little less square than its normals, so the shape works against "
    "it: within the normals' interquartile range of shapes it separates 0.850 against 0.761 "
    "overall. Its score is the Mahalanobis distance of the globally pooled embedding, and the "
    "pooling takes the replicated border in with the part. PaDiM, PatchCore, both Mem-AEs and "
    "MKD ignore the shape (|rho| <= 0.09); STFPM follows it a little (+0.21). GANomaly and OC-GAN lean the other way (-0.29, "
    "-0.24), which the shapes reward, so their losses to letterboxing have another cause "
    "(fewer pixels on the part, presumably). Not changed: pooling over the valid box only "
    "would need the box inside the exported graph.\n\n"
)


def main() -> None:
    from kept_bundles import raw_scores, suite_bundles
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    from inspection.bench.report import markdown_table, stamp, write_results
    from inspection.bench.suite import DATASETS, load_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--bundles", type=Path, default=None)
    args = parser.parse_args()
    bundles = suite_bundles("mt-exp", args.bundles)

    _, test = load_dataset(DATASETS["mt-exp"], args.data_root, 256, "auto")
    boxes = test.valid_boxes()
    frac = boxes[:, 2] * boxes[:, 3] / float(test.size) ** 2
    defect = test.labels.astype(bool)
    low, high = np.quantile(frac[~defect], [0.25, 0.75])
    band = (frac >= low) & (frac <= high)
    rows: list[dict[str, Any]] = [
        {
            "score": "box fraction itself",
            "image_auroc": round(float(roc_auc_score(defect, -frac)), 3),
            "spearman_normals": None,
            "image_auroc_iqr": round(float(roc_auc_score(defect[band], -frac[band])), 3),
        }
    ]
    for key in DETECTORS:
        if not (bundles / key / "model.json").is_file():
            continue
        score = raw_scores(bundles / key, test.images, threads=1)
        rows.append(
            {
                "score": key,
                "image_auroc": round(float(roc_auc_score(defect, score)), 3),
                "spearman_normals": round(float(spearmanr(score[~defect], frac[~defect])[0]), 2),
                "image_auroc_iqr": round(float(roc_auc_score(defect[band], score[band])), 3),
            }
        )
        print(rows[-1], flush=True)
    about = (
        "mt-exp letterboxed at 256 px (the suite's geometry): each test image's valid box "
        f"covers {frac.min():.2f}-{frac.max():.2f} of the square (normals' median "
        f"{np.median(frac[~defect]):.2f}, defects' {np.median(frac[defect]):.2f}). "
        "`spearman_normals`: rank correlation of the detector's score with the box fraction "
        "among the test normals (0: the score ignores the shape); `image_auroc_iqr`: image "
        f"AUROC on the {int(band.sum())} test images whose box fraction lies in the normals' "
        f"interquartile range ({low:.2f}-{high:.2f}). The first row scores by the box fraction "
        "alone (smaller = defective). Scores: the suite's kept bundles on OpenVINO. Method: "
        "`bench/explore/pad_box_fraction.py`.\n\n" + FINDING
    )
    write_results(
        "pad-box-fraction",
        {**stamp(), "rows": rows},
        about + markdown_table(rows, list(rows[0])),
        OUT,
    )


if __name__ == "__main__":
    main()
