"""Exploration, not a benchmark: how much of ``mt-exp`` image AUROC needs no defect at all?

Question: the protocol's test normals come only from acquisition groups exp5 and exp6, its
defective images from every group (exp0..exp6), and the groups were shot at different exposures.
A score that only recognises the group (or the exposure) would then separate "defective" from
"normal" without seeing a defect. This script scores every test image with trivial, defect-blind
statistics of the raw 8-bit image (mean grey level, standard deviation, original height and
width, aspect) and reports their image AUROC, oriented both ways (the better of the two is what a
detector could pick up by accident), plus the test images per class and group. It reads test
labels by design and chooses nothing in any detector.

    .venv/bin/python bench/explore/mt_exp_confound.py --data ../shared/data/magnetic_tile

writes ``bench/results/explore/mt-exp-confound.{json,md}``.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score

from inspection.bench.report import stamp, write_results
from inspection.data.magnetic_tile import NORMAL_CLASS, TEST_GROUPS, scan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/magnetic_tile")
    args = parser.parse_args()

    items = [
        t for t in scan(args.data) if t.cls != NORMAL_CLASS or t.group in TEST_GROUPS
    ]  # the mt-exp test set
    labels = np.array([t.cls != NORMAL_CLASS for t in items])
    stats: dict[str, list[float]] = {k: [] for k in ("mean", "std", "height", "width", "aspect")}
    for t in items:
        gray = cv2.imread(str(t.image), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            raise SystemExit(f"cannot read {t.image}")
        stats["mean"].append(float(gray.mean()))
        stats["std"].append(float(gray.std()))
        stats["height"].append(float(gray.shape[0]))
        stats["width"].append(float(gray.shape[1]))
        stats["aspect"].append(gray.shape[1] / gray.shape[0])
    rows = []
    for name, values in stats.items():
        auroc = float(roc_auc_score(labels, values))
        rows.append(
            {
                "statistic": name,
                "auroc_higher_is_defective": auroc,
                "auroc_lower_is_defective": 1.0 - auroc,
                "best": max(auroc, 1.0 - auroc),
            }
        )
    groups = Counter((t.cls, t.group) for t in items)
    classes = sorted({t.cls for t in items}, key=lambda c: (c != NORMAL_CLASS, c))
    group_ids = sorted({t.group for t in items})
    per_group_mean = {
        g: float(np.mean([m for t, m in zip(items, stats["mean"], strict=True) if t.group == g]))
        for g in group_ids
    }
    meta = stamp()
    payload = {
        "what": "exploration (test labels read; chooses nothing)",
        **meta,
        "statistics": rows,
        "images_per_class_and_group": {
            c: {str(g): groups.get((c, g), 0) for g in group_ids} for c in classes
        },
        "mean_grey_per_group": {str(g): v for g, v in per_group_mean.items()},
    }
    lines = [
        "mt-exp: image AUROC of defect-blind statistics (exploration; script "
        "`bench/explore/mt_exp_confound.py`).",
        "",
        "Test normals come from groups exp5/exp6 only, defective test images from every group. "
        "Each row scores the raw test images by one statistic that knows nothing of defects; "
        "`best` is the AUROC of the better orientation, i.e. what a detector could reach by "
        "responding to that statistic alone. Read with the detector table: an image AUROC near "
        "these numbers says little about finding defects.",
        "",
        "| statistic | higher = defective | lower = defective | best |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['statistic']} | {r['auroc_higher_is_defective']:.3f} | "
        f"{r['auroc_lower_is_defective']:.3f} | {r['best']:.3f} |"
        for r in rows
    ]
    lines += [
        "",
        "## Test images per class and acquisition group",
        "",
        "| class | " + " | ".join(f"exp{g}" for g in group_ids) + " |",
        "|---|" + "---|" * len(group_ids),
    ]
    lines += [
        f"| {c} | " + " | ".join(str(groups.get((c, g), 0)) for g in group_ids) + " |"
        for c in classes
    ]
    lines += [
        "| mean grey level (all test images of the group) | "
        + " | ".join(f"{per_group_mean[g]:.0f}" for g in group_ids)
        + " |",
        "",
    ]
    markdown = "\n".join(lines)
    write_results("mt-exp-confound", payload, markdown, Path("bench/results/explore"))
    print(markdown)


if __name__ == "__main__":
    main()
