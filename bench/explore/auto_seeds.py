"""Exploration, not a benchmark: how far does ``detector: auto``'s suite mean move with its seed?

The suite's ``auto`` rows are one seed (0): one 85 / 15 fit / validation split, one painting of
the validation defects, one coreset start. Their mean image AUROC (0.948) sits 0.002 under issue
#18's 0.95, and the screw has only 100 test images. This trains ``auto`` exactly as the suite and
``inspection train`` do (each set loaded at :data:`inspection.training.AUTO_LOAD_SIZE` with the
geometry ``inspection train`` gives it), with ``training.train_auto(seed=s)`` for each seed, and
records which candidate it chose, every candidate's painted-validation AUROC and the chosen
model's test image AUROC. Test labels only measure; nothing is chosen from them and the suite
rows keep seed 0.

    PYTHONPATH=. .venv/bin/python bench/explore/auto_seeds.py --seeds 1,2

writes ``bench/results/explore/auto-seeds.{json,md}`` after every cell (rows of earlier runs
are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

OUT = Path("bench/results/explore")
NAME = "auto-seeds"
SETS = ("mt-exp", "elpv_solar", "mvtec_screw")

FINDING = (
    "Finding (2026-12-05): seed 0 reproduces the suite's `auto` rows exactly (same choices, "
    "validation and test AUROC). Over seeds 0-2 the mean is 0.946-0.949 and the worst set "
    "0.919-0.924: the shortfall from issue #18's 0.95 mean is small but not the luck of one "
    "split. The choices are stable (PaDiM on mt-exp, PatchCore at 320 px on elpv_solar, "
    "PatchCore on the screw, at 320 px for seeds 1 and 2); elpv_solar, at 0.919-0.924, is "
    "what holds the mean down.\n\n"
)


def main() -> None:
    from sklearn.metrics import roc_auc_score

    from inspection import training
    from inspection.bench.suite import DATASETS, load_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--seeds", default="1,2", help="comma-separated train_auto seeds")
    parser.add_argument("--sets", default=",".join(SETS))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    sets = [s for s in args.sets.split(",") if s.strip()]

    out_json = OUT / f"{NAME}.json"
    rows: list[dict[str, Any]] = []
    if out_json.exists():
        rows = json.loads(out_json.read_text())["rows"]
    for name in sets:
        train, test = load_dataset(DATASETS[name], args.data_root, training.AUTO_LOAD_SIZE, "auto")
        for seed in seeds:
            start = time.perf_counter()
            trained = training.train_auto(train, seed=seed)
            seconds = time.perf_counter() - start
            size = trained.detector.config.image_size
            scores = trained.detector.predict(test.resized(size).images).score
            selection = trained.auto_selection or {}
            row: dict[str, Any] = {
                "dataset": name,
                "seed": seed,
                "fit": test.fit,
                "chosen": selection.get("chosen"),
                "test_image_auroc": round(float(roc_auc_score(test.labels, scores)), 4),
                **{
                    f"val_{cand}": round(float(rec["image_auroc"]), 4)
                    for cand, rec in selection.get("candidates", {}).items()
                },
                "train_seconds": round(seconds, 1),
                "load": round(os.getloadavg()[0], 2),
            }
            rows = [r for r in rows if (r["dataset"], r["seed"]) != (name, seed)] + [row]
            print(json.dumps(row), flush=True)
            write_report(rows)


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per seed with a row on every set: mean and worst test image AUROC over the sets."""
    out = []
    for seed in sorted({r["seed"] for r in rows}):
        per_set = {r["dataset"]: r["test_image_auroc"] for r in rows if r["seed"] == seed}
        if set(per_set) >= set(SETS):
            values = [per_set[s] for s in SETS]
            out.append(
                {
                    "seed": seed,
                    **{s: per_set[s] for s in SETS},
                    "mean": round(statistics.mean(values), 4),
                    "worst": min(values),
                }
            )
    return out


def write_report(rows: list[dict[str, Any]]) -> None:
    """``auto-seeds.json`` / ``.md`` under :data:`OUT` from the rows measured so far."""
    from inspection.bench.report import markdown_table, stamp, write_results

    summary = summarise(rows)
    about = (
        "`detector: auto` trained as the suite and `inspection train` do (each set loaded at "
        "320 px with its default geometry: mt-exp letterboxed), with `train_auto(seed=s)`: "
        "the seed draws the 85 / 15 fit / validation split, the painted validation defects "
        "and the coreset start. `chosen`: the candidate the painted validation kept; "
        "`val_*`: each candidate's painted-validation image AUROC (what auto chooses by); "
        "`test_image_auroc`: the chosen model on the test images (measured, never used to "
        "choose). Seed 0 is the suite's. Method: `bench/explore/auto_seeds.py`. "
        "`train_seconds` (all candidates) at the 1-min load average in `load` (2 cores).\n\n"
    )
    md = about + FINDING
    if summary:
        md += "Mean and worst over the three sets, per seed:\n\n"
        md += markdown_table(summary, list(summary[0])) + "\n\n"
    md += markdown_table(rows)
    write_results(NAME, {**stamp(), "summary": summary, "rows": rows}, md, OUT)


if __name__ == "__main__":
    main()
