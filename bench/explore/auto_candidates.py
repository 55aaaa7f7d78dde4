"""Exploration, not a benchmark: which candidates should ``detector: auto`` try?

A GPU sweep of PatchCore variants on cached Lite0 features (``bench/results/explore/
patchcore-gpu-sweep.md``) found no single setting better on every suite set, but one strong
set-dependent effect: without neighbourhood averaging (``neighbourhood: 1``) PatchCore finds
the small defects of ``mvtec_screw`` better (0.961 against 0.929, three coreset seeds) and the
textures of ``mt-exp`` worse (0.891 against 0.926). A set-dependent setting is what ``auto``'s
label-free choice is for, if the painted validation defects rank it right. This trains each
candidate as ``training.train_auto`` does (one 85 / 15 split, seed 0; subtle defects painted
on the held-out normals at the load side), records its painted-validation image AUROC (what
``auto`` chooses by) and, for measurement only, its test image AUROC.

    PYTHONPATH=. .venv/bin/python bench/explore/auto_candidates.py mvtec_screw elpv_solar mt-exp
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from inspection import training
from inspection.bench.report import markdown_table, stamp, write_results

OUT = Path("bench/results/explore")
CANDIDATES: dict[str, dict[str, Any]] = {
    "padim": {"type": "padim", "image_size": 256},
    "padim@320": {"type": "padim", "image_size": 320},
    "patchcore": {"type": "patchcore", "image_size": 256},
    "patchcore@320": {"type": "patchcore", "image_size": 320},
    "patchcore/p1": {"type": "patchcore", "image_size": 256, "neighbourhood": 1},
    "patchcore/p1@320": {"type": "patchcore", "image_size": 320, "neighbourhood": 1},
}

NOTE = (
    "Reference, from `bench/results/suite.json`'s `auto` rows (load side 320, same split and "
    "painting): painted-validation AUROC padim / patchcore / patchcore@320 = 0.892 / 0.962 / "
    "0.963 on mvtec_screw, 0.922 / 0.947 / 0.962 on elpv_solar, 0.900 / 0.842 / 0.839 on "
    "mt-exp. The `patchcore/p1` rows were loaded at 256 px, not as `train_auto` does: an "
    "`inspection bench suite --detectors auto` run with `patchcore-fine` (= `patchcore/p1`) "
    "as a candidate (2026-12-04 18:15, load ~5, stopped after it) gave it 0.959 on "
    "mvtec_screw at load side 320, below plain patchcore's 0.962, so auto would not have "
    "chosen it there; with `patchcore/p1@320` at 0.952 it would have lost "
    "patchcore@320's 0.951 on the screw test set. Not adopted.\n\n"
)
#: What each run (``--name``) found, above its table.
NOTES = {
    "auto-candidates": NOTE,
    "auto-padim320": (
        "Would PaDiM at 320 px, a fourth candidate, win back what letterboxing costs on "
        "mt-exp (`--fit auto`: the geometry `inspection train` gives each set, so mt-exp is "
        "letterboxed, the square sets stretched)? The painted validation would choose it on "
        "mt-exp (0.868 against padim's 0.834 and patchcore@320's 0.827, from the suite's "
        "`auto` row), where it scores 0.949 on the test images against padim's 0.952; on "
        "mvtec_screw (0.860) and elpv_solar (0.927) PatchCore's validation is higher (0.970, "
        "0.962), so nothing changes there. It would lower `auto` on mt-exp by 0.003 and cost "
        "twice PaDiM's fit. Not adopted. The `padim` rows reproduce the suite's `auto` records "
        "(validation 0.834 / 0.892 / 0.922).\n\n"
    ),
}


def main() -> None:
    from sklearn.metrics import roc_auc_score

    from inspection.bench.suite import DATASETS, load_dataset
    from inspection.data.imageset import ImageSet
    from inspection.detectors import registry
    from inspection.validation import subtle_defects

    parser = argparse.ArgumentParser()
    parser.add_argument("sets", nargs="+")
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--only", default="", help="comma-separated candidate names")
    parser.add_argument("--name", default="auto-candidates")
    parser.add_argument(
        "--load", type=int, default=0, help="load side (0: train_auto's, AUTO_LOAD_SIZE)"
    )
    parser.add_argument(
        "--fit",
        default="stretch",
        help="geometry: stretch (how the committed rows were measured), pad, or auto "
        "(what inspection train gives each set)",
    )
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(CANDIDATES)
    load = args.load or training.AUTO_LOAD_SIZE
    rows: list[dict[str, Any]] = []
    out_json = OUT / f"{args.name}.json"
    if out_json.exists():
        rows = [r for r in json.loads(out_json.read_text())["rows"]]
    for name in args.sets:
        train, test = load_dataset(DATASETS[name], Path(args.data_root), load, args.fit)
        fit_all, val_all = training.split_validation(train, 0.15, 0)
        painted, masks = subtle_defects(val_all.images, copies=2, seed=0)
        painted_set = ImageSet(
            painted, masks > 0, ["synthetic"] * len(painted), [f"p{i}" for i in range(len(painted))]
        )
        for cand in names:
            config = CANDIDATES[cand]
            det = registry.create({**config, "seed": 0})
            size = det.config.image_size
            start = time.perf_counter()
            trained = training.fit_and_calibrate(
                det, fit_all.resized(size), val_all.resized(size), 0.99
            )
            fit_s = time.perf_counter() - start
            judged = training._judge(trained, val_all.resized(size), painted_set.resized(size))
            scores = trained.detector.predict(test.resized(size).images).score
            row = {
                "dataset": name,
                "candidate": cand,
                "load_side": load,
                "fit": test.fit,
                "val_image_auroc": judged["image_auroc"],
                "val_pixel_auroc": judged["pixel_auroc"],
                "test_image_auroc": round(float(roc_auc_score(test.labels, scores)), 4),
                "fit_seconds": round(fit_s, 1),
                "load": round(os.getloadavg()[0], 2),
            }
            rows = [r for r in rows if (r["dataset"], r["candidate"]) != (name, cand)] + [row]
            print(json.dumps(row), flush=True)
            write_report(args.name, rows)


def write_report(name: str, rows: list[dict[str, Any]]) -> None:
    """``<name>.json`` / ``.md`` under :data:`OUT` from the rows measured so far."""
    about = (
        "Candidates of `detector: auto`, each trained as `training.train_auto` does "
        "(85 / 15 split, seed 0, subtle defects painted on the held-out normals): "
        "`val_image_auroc` is what auto chooses by (label-free), `test_image_auroc` "
        "measures the choice. Method: `bench/explore/auto_candidates.py`. "
        "`fit_seconds` at the 1-min load average in `load` (2 cores). `load_side`: "
        "the side the normals were loaded and painted at before each candidate's "
        "resize (`train_auto` uses its largest candidate's, 320 px). `fit`: the geometry "
        "(rows without one were stretched).\n\n" + NOTES.get(name, "")
    )
    write_results(name, {**stamp(), "rows": rows}, about + markdown_table(rows), OUT)


if __name__ == "__main__":
    main()
