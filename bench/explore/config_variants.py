"""Exploration, not a benchmark: a detector's default config beside a few changed settings.

Question: does a setting (internal resolution, layers, ...) help on synthetic defects painted onto
held-out normals, the label-free criterion a new line would have? Each variant is trained like a
benchmark row (``training.train`` on the protocol's training split, seed 0) and reported twice: the
synthetic-defect validation the engine records (score-mode choice, epoch choice) and the test
metrics. A default changes only where the synthetic validation says so; the test columns are
shown so that the reader sees what that rule would have cost or gained, and choose nothing.

    .venv/bin/python bench/explore/config_variants.py --detector ocgan \
        --variant default '{}' --variant work128 '{"work_size": 128}' --name ocgan-work-size

writes ``bench/results/explore/<name>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from inspection import evaluation, training
from inspection.bench.detectors import load_protocol
from inspection.bench.report import markdown_table, stamp, write_results
from inspection.data.magnetic_tile import same_group_auroc
from inspection.detectors import registry


def _chosen_epoch(selection: dict[str, Any]) -> dict[str, Any]:
    """The history entry of the epoch an epoch selection kept."""
    return next(h for h in selection["history"] if h["epoch"] == selection["chosen_epoch"])


def _synthetic(trained: Any) -> str:
    """The engine's label-free record of a trained model, one line."""
    parts = []
    sel = trained.score_selection
    if sel:
        parts.append(
            f"score mode {sel['chosen']} ("
            + ", ".join(f"{m} {v:.3f}" for m, v in sel["auroc"].items())
            + ")"
        )
    ep = trained.epoch_selection
    if ep:
        best = _chosen_epoch(ep)
        parts.append(
            f"epoch {ep['chosen_epoch']}/{ep['epochs_run']} "
            f"({best['image_auroc']:.3f} / {best['pixel_auroc']:.3f})"
        )
    return "; ".join(parts) or "-"


def _synthetic_best(trained: Any) -> float | None:
    sel = trained.score_selection
    if sel:
        return float(sel["auroc"][sel["chosen"]])
    ep = trained.epoch_selection
    if ep:
        return float(_chosen_epoch(ep)["score"])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/magnetic_tile"))
    parser.add_argument("--detector", required=True)
    parser.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "JSON"))
    parser.add_argument("--name", required=True, help="Result file stem.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    cls = registry.get(args.detector)
    rows: list[dict[str, Any]] = []
    sets: dict[int, tuple[Any, Any]] = {}  # (train, test) per image size, loaded once
    for name, overrides in args.variant or [("default", "{}")]:
        config = cls.Config(type=args.detector, **json.loads(overrides))
        if config.image_size not in sets:
            sets[config.image_size] = load_protocol("mt-exp", args.data, config.image_size)
        train_set, test_set = sets[config.image_size]
        start = time.perf_counter()
        trained = training.train(cls(config), train_set)
        seconds = time.perf_counter() - start
        out = trained.detector.predict(test_set.images)
        metrics = evaluation.evaluate(out.score, out.anomaly_map, test_set, trained.calibration)
        same = same_group_auroc(out.score, test_set, trained.calibration.image_threshold)
        rows.append(
            {
                "variant": name,
                "overrides": overrides,
                "synthetic_validation": _synthetic(trained),
                "synthetic_best": _synthetic_best(trained),
                "image_auroc": metrics["image_auroc"],
                "image_auroc_same_groups": same,
                "pixel_auroc": metrics["pixel_auroc"],
                "aupro": metrics["aupro"],
                "fit_seconds": round(seconds, 1),
            }
        )
        logging.info("%s %s: %s", args.detector, name, rows[-1])

    payload = {**stamp(), "detector": args.detector, "protocol": "mt-exp", "rows": rows}
    cols = list(rows[0])
    md = (
        f"Detector `{args.detector}` on `mt-exp`, seed 0, default config plus the overrides shown. "
        "`synthetic_validation` is the engine's label-free record (synthetic defects painted onto "
        "the held-out normals; `synthetic_best` its chosen value); the test columns read test "
        "labels and choose nothing. Method: `bench/explore/config_variants.py`.\n\n"
        + markdown_table(rows, cols)
    )
    write_results(args.name, payload, md, Path("bench/results/explore"))


if __name__ == "__main__":
    main()
