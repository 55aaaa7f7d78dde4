"""Exploration, not a benchmark: PatchCore settings across every data set of protocol ``suite``.

Question: the default ``patchcore`` (Lite0 ``blocks.2`` + ``blocks.4``, bank capped at 4096)
falls short of the issue's image AUROC on ``mvtec_screw`` and ``mt-exp``. Which general
setting (more layers, a larger bank, a higher side) helps on every set at once, and what does
it cost in fit time? Each (variant, set) is trained like ``detector: auto`` with that one
candidate (same held-out split, same painted validation defects) in its own process, and
reported twice: the label-free synthetic validation AUROC a new line would see, and the test
image AUROC. A default changes only when a variant is better on the sets together, never
for one set.

    .venv/bin/python bench/explore/patchcore_suite.py \
        --variant l234 '{"layers": ["blocks.2", "blocks.3", "blocks.4"]}' --name patchcore-suite

writes ``bench/results/explore/<name>.{json,md}`` (rows merged with an earlier run's).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from inspection.bench.report import markdown_table, stamp, write_results

OUT = Path("bench/results/explore")


def cell(dataset: str, name: str, overrides: dict[str, Any], data_root: str) -> dict[str, Any]:
    """Train one variant on one set (in a child process) and score its test set."""
    import torch

    from inspection import training
    from inspection.bench.measure import progress_logger
    from inspection.bench.suite import DATASETS, load_dataset
    from inspection.evaluation import _auroc

    config = {"type": "patchcore", **overrides}
    size = int(config.get("image_size", 256))
    train_set, test_set = load_dataset(DATASETS[dataset], Path(data_root), size)
    start = time.perf_counter()
    trained = training.train_auto(
        train_set,
        progress=progress_logger(f"{dataset}/{name}"),
        candidates=[training.Candidate(name, config)],
    )
    train_s = time.perf_counter() - start
    record = (trained.auto_selection or {})["candidates"][name]
    out = trained.detector.predict(test_set.images)
    test = _auroc(torch.from_numpy(out.score), torch.from_numpy(test_set.labels).long())
    bank = trained.detector.torch_model.memory_bank  # type: ignore[attr-defined]
    return {
        "dataset": dataset,
        "variant": name,
        "overrides": json.dumps(overrides),
        "synthetic_auroc": record["image_auroc"],
        "image_auroc": None if test is None else round(test, 4),
        "fit_seconds": record["fit_seconds"],
        "train_seconds": round(train_s, 1),
        "bank": list(bank.shape),
    }


def main() -> None:
    from inspection.bench.measure import run_in_child

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "JSON"))
    parser.add_argument("--dataset", action="append")
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--name", default="patchcore-suite")
    args = parser.parse_args()
    datasets = args.dataset or ["mvtec_screw", "elpv_solar", "mt-exp"]
    path = OUT / f"{args.name}.json"
    rows: list[dict[str, Any]] = json.loads(path.read_text())["rows"] if path.exists() else []
    for name, raw in args.variant:
        for dataset in datasets:
            status, value = run_in_child(cell, (dataset, name, json.loads(raw), args.data_root))
            if status != "ok":
                logging.error("%s/%s failed: %s", dataset, name, value)
                continue
            logging.info("row %s", value)
            rows = [r for r in rows if (r["dataset"], r["variant"]) != (dataset, name)]
            rows.append(value)
            _write(args.name, rows)


def _write(name: str, rows: list[dict[str, Any]]) -> None:
    payload = {**stamp(), "rows": rows}
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    sets = list(dict.fromkeys(r["dataset"] for r in rows))
    table = []
    for v in variants:
        mine = {r["dataset"]: r for r in rows if r["variant"] == v}
        line: dict[str, Any] = {"variant": v, "overrides": next(iter(mine.values()))["overrides"]}
        for s in sets:
            r = mine.get(s)
            line[f"{s} test"] = r and r["image_auroc"]
            line[f"{s} synthetic"] = r and r["synthetic_auroc"]
            line[f"{s} fit_s"] = r and r["fit_seconds"]
        tests = [mine[s]["image_auroc"] for s in sets if s in mine]
        line["mean test"] = round(float(np.mean(tests)), 4) if len(tests) == len(sets) else None
        table.append(line)
    columns = ["variant", "overrides"]
    columns += [f"{s} {k}" for s in sets for k in ("test", "synthetic", "fit_s")]
    columns += ["mean test"]
    md = (
        "PatchCore settings on every set of protocol `suite` (exploration; method: "
        "`bench/explore/patchcore_suite.py`). `synthetic` is the label-free validation "
        "AUROC (painted defects on held-out normals) that `detector: auto` ranks by; `test` "
        "reads test labels and chooses nothing. Fit times on a shared 2-core machine. "
        "Rows of the default on the other sets: `bench/results/suite.json`.\n\n"
        + markdown_table(table, columns)
        + "\n"
    )
    write_results(name, payload, md, OUT)


if __name__ == "__main__":
    main()
