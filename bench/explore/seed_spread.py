"""Exploration, not a benchmark: how much does a detector's ``mt-exp`` result move with its seed?

Question: after a rewrite that changed OC-GAN's input only by float rounding, its image AUROC
went from 0.622 to 0.550, while GANomaly and Mem-AE moved by < 0.01. Is that OC-GAN's normal
run-to-run spread? This trains each detector with its default config and seeds 0..N-1 (the
detector's own ``seed``: initialisation, batches, augmentation) on the protocol's training split
and reports test image AUROC, same-groups AUROC and pixel AUROC per seed. It reads test labels
to report, and chooses nothing: the benchmark rows keep seed 0.

    .venv/bin/python bench/explore/seed_spread.py --detectors ocgan,ganomaly --seeds 3

writes ``bench/results/explore/seed-spread.{json,md}``.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from inspection import evaluation, training
from inspection.bench.detectors import load_protocol
from inspection.bench.report import markdown_table, stamp, write_results
from inspection.data.magnetic_tile import same_group_auroc
from inspection.detectors import registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/magnetic_tile"))
    parser.add_argument("--detectors", default="ocgan,ganomaly")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    for key in [k.strip() for k in args.detectors.split(",") if k.strip()]:
        cls = registry.get(key)
        aurocs = []
        for seed in range(args.seeds):
            config = cls.Config(type=key, seed=seed)
            detector = cls(config)
            train_set, test_set = load_protocol("mt-exp", args.data, config.image_size)
            trained = training.train(detector, train_set)
            out = detector.predict(test_set.images)
            metrics = evaluation.evaluate(out.score, out.anomaly_map, test_set, trained.calibration)
            same = same_group_auroc(out.score, test_set, trained.calibration.image_threshold)
            aurocs.append(metrics["image_auroc"])
            rows.append(
                {
                    "detector": key,
                    "seed": seed,
                    "image_auroc": metrics["image_auroc"],
                    "image_auroc_same_groups": same,
                    "pixel_auroc": metrics["pixel_auroc"],
                    "score_selection": str(trained.score_selection),
                    "fit_seconds": round(trained.fit_seconds, 1),
                }
            )
            print(f"{key} seed {seed}: image AUROC {metrics['image_auroc']:.3f}", flush=True)
        summary.append(
            {
                "detector": key,
                "seeds": len(aurocs),
                "mean_image_auroc": statistics.mean(aurocs),
                "min": min(aurocs),
                "max": max(aurocs),
                "spread": max(aurocs) - min(aurocs),
            }
        )
    payload = {**stamp(), "protocol": "mt-exp", "summary": summary, "runs": rows}
    md = "\n\n".join(
        [
            "Test metrics per training seed (default configs, protocol `mt-exp`). "
            "Method: `bench/explore/seed_spread.py`.",
            markdown_table(summary, list(summary[0])),
            markdown_table(rows, [c for c in rows[0] if c != "score_selection"]),
        ]
    )
    write_results("seed-spread", payload, md, Path("bench/results/explore"))


if __name__ == "__main__":
    main()
