"""Exploration, not a benchmark: does PatchCore's fine bank hold across seeds?

The suite rows use seed 0 only. This trains PatchCore with and without ``fine_bank`` (all else
default) with the detector's ``seed`` 1 and 2 (the coreset's first point and the engine's
fit / validation split) on every ``suite`` set, pairs the two per seed, and reports test image
AUROC. Test labels only measure; they choose nothing.

    PYTHONPATH=. .venv/bin/python bench/explore/patchcore_finebank_seeds.py

writes ``bench/results/explore/patchcore-finebank-seeds.{json,md}``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from sklearn.metrics import roc_auc_score

from inspection import training
from inspection.bench.report import markdown_table, stamp, write_results
from inspection.bench.suite import dataset_specs, load_dataset
from inspection.detectors import registry

SETS = ("mvtec_screw", "elpv_solar", "mt-exp")
SEEDS = tuple(int(s) for s in os.environ.get("SEEDS", "1,2").split(","))


def main() -> None:
    rows: list[dict[str, Any]] = []
    cls = registry.get("patchcore")
    for name in SETS:
        spec = dataset_specs(False)[name]
        train_set, test_set = load_dataset(
            spec, Path("../shared/data"), 256, "stretch"
        )  # as measured
        for seed in SEEDS:
            for fine in (False, True):
                start = time.perf_counter()
                det = cls(cls.Config(type="patchcore", seed=seed, fine_bank=fine))
                trained = training.train(det, train_set)
                score = trained.detector.predict(test_set.images).score
                rows.append(
                    {
                        "dataset": name,
                        "seed": seed,
                        "fine_bank": fine,
                        "image_auroc": float(roc_auc_score(test_set.labels, score)),
                        "fit_seconds": round(trained.fit_seconds, 1),
                        "load": round(os.getloadavg()[0], 2),
                        "seconds": round(time.perf_counter() - start, 1),
                    }
                )
                print(rows[-1], flush=True)
    pairs = []
    for name in SETS:
        for seed in SEEDS:
            one = [r for r in rows if r["dataset"] == name and r["seed"] == seed]
            single = next(r["image_auroc"] for r in one if not r["fine_bank"])
            dual = next(r["image_auroc"] for r in one if r["fine_bank"])
            pairs.append(
                {
                    "dataset": name,
                    "seed": seed,
                    "one_bank": single,
                    "fine_bank": dual,
                    "difference": dual - single,
                }
            )
    payload = {**stamp(), "seeds": list(SEEDS), "pairs": pairs, "runs": rows}
    md = "\n".join(
        [
            "PatchCore with one bank (`fine_bank: false`) and with the fine bank (the default), "
            "all else default, detector seeds "
            + ", ".join(map(str, SEEDS))
            + " (coreset start and the engine's fit / validation split; the suite rows are "
            "seed 0), test image AUROC per suite set. Method: "
            "`bench/explore/patchcore_finebank_seeds.py`.\n",
            markdown_table(pairs, list(pairs[0])),
            "",
            markdown_table(rows, list(rows[0])),
        ]
    )
    write_results(
        "patchcore-finebank-seeds", payload, md, results_dir=Path("bench/results/explore")
    )


if __name__ == "__main__":
    main()
