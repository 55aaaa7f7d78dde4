"""Collect three explorations of 2026-12-05 into ``bench/results/explore/patchcore-metric-scale``.

Inputs (defaults as the scripts write them): ``patchcore_whiten.py`` (``/tmp/pw``),
``patchcore_scale.py`` (``/tmp/ps``) and ``suite_fit.py`` (``/tmp/fitx``).

    PYTHONPATH=. .venv/bin/python bench/explore/patchcore_metric_scale_report.py
"""

import json
from pathlib import Path
from typing import Any

from inspection.bench.report import markdown_table, stamp, write_results

OUT = Path("bench/results/explore")
SUITE = json.loads(Path("bench/results/suite.json").read_text())["datasets"]["mt-exp"]["detectors"]
FIT_COLUMNS = [
    "detector",
    "chosen",
    "pad_image_auroc",
    "stretch_image_auroc",
    "pad_pixel_auroc",
    "stretch_pixel_auroc",
    "pad_aupro",
    "stretch_aupro",
    "pad_fit_seconds",
]


def fit_rows() -> list[dict[str, Any]]:
    rows = []
    for path in sorted(Path("/tmp/fitx").glob("mt-exp-*.json")):
        r = json.loads(path.read_text())
        key = path.stem.removeprefix("mt-exp-")
        old = SUITE[key]
        rows.append(
            {
                "detector": key,
                "chosen": r.get("chosen", "-"),
                "pad_image_auroc": r["image_auroc"],
                "stretch_image_auroc": old["image_auroc"],
                "pad_pixel_auroc": r["pixel_auroc"],
                "stretch_pixel_auroc": old["pixel_auroc"],
                "pad_aupro": r["aupro"],
                "stretch_aupro": old["aupro"],
                "pad_fit_seconds": r["fit_seconds"],
                "per_type_pad": {k: v["image_auroc"] for k, v in r["per_type"].items()},
                "auto_selection": r.get("auto_selection"),
            }
        )
    return rows


def main() -> None:
    whiten = json.loads(Path("/tmp/pw/whiten-256.json").read_text())
    scale = json.loads(Path("/tmp/ps/scale.json").read_text())
    fits = fit_rows()
    payload = {**stamp(), "whiten": whiten, "scale": scale, "fit": fits}
    w = whiten["mvtec_screw"]
    wrows = [
        {
            "lam": lam,
            "fine_bank": w[f"wh{lam}:p1"],
            "context_bank": w[f"wh{lam}:p3"],
            "both_averaged": w[f"wh{lam}"],
            "both_k3": w[f"wh{lam}:k3"],
            "both_top0.5": w[f"wh{lam}:top0.5"],
            "both_top5": w[f"wh{lam}:top5"],
        }
        for lam in ("1", "0.3", "0.05")
    ]
    per_type = "; ".join(
        r["detector"] + ": " + ", ".join(f"{k} {v:.3f}" for k, v in r["per_type_pad"].items())
        for r in fits
    )
    srows = [{"variant": k, "top1": v["top1"], "top5": v["top5"]} for k, v in scale.items()]
    md = f"""
Three PatchCore questions, all answered on test labels that choose nothing (exploration).

## 1. A whitened (shrunk Mahalanobis) patch metric: `bench/explore/patchcore_whiten.py`

PaDiM (Mahalanobis) beats PatchCore (Euclidean) on mt-exp; here each bank's features are
whitened by `S^(-1/2)`, `S = (1 - lam) C + lam (tr C / d) I`, before the cover is built
(`lam` = 1: plain Euclidean, the shipped detector). Run on `mvtec_screw` first (85 / 15 split,
cover seed 0); stopped there because it already fails the condition for a default (better on
every set): whitening drops the screw by 0.026-0.027, all of it in the context bank.

{markdown_table(wrows, list(wrows[0]))}

## 2. One scale for every mt-exp tile: `bench/explore/patchcore_scale.py`

Squaring mt-exp's tiles (w / h 0.36-2.6, 124-598 px wide) changes each tile's texture scale
differently. Here every tile is scaled by one factor (`scale<f>`, aspect kept, no padding) and
Lite0 runs on it as it is; `stretch256` is the same code on the suite's stretched squares.
Image AUROC (mean of the largest 1 % / 5 % of patch distances). A common scale is worse, not
better: the per-tile scale change is not what holds PatchCore back on mt-exp.

{markdown_table(srows, ["variant", "top1", "top5"])}

## 3. mt-exp with the product's own geometry: `bench/explore/suite_fit.py`

The suite loads mt-exp stretched, but `inspection train --fit auto` (the default) letterboxes
it, because its aspect ratios vary (`inspection.geometry.choose_fit`). Same `bench_cell`, loader
switched to `fit="auto"` (pad); pixel metrics on each tile's valid box. `stretch_*` columns are
the committed suite rows (`bench/results/suite.json`). `fit_seconds` on a 2-core machine at
load 1.3-1.6.

{markdown_table(fits, FIT_COLUMNS)}

Per defect type, image AUROC with pad: {per_type}.

Reading: with the geometry the product actually uses, PatchCore gains 0.007 image AUROC on
mt-exp (0.925 -> 0.932) and 0.027 pixel AUROC; PaDiM keeps its image AUROC and gains 0.021 pixel
AUROC. PatchCore stays short of the 0.95 asked either way. `auto` with pad again chooses PaDiM
(painted-validation AUROC 0.834 against 0.827 for patchcore@320 and 0.780 for patchcore) and
lands at 0.952 against 0.958 stretched: still within 0.02 of the best single detector. The suite's mt-exp rows are still
stretched (every detector would need re-running to switch it).
"""
    write_results("patchcore-metric-scale", payload, md, OUT)


if __name__ == "__main__":
    main()
