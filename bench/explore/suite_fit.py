"""Exploration: a suite cell with the product's own input geometry (``--fit auto``) instead of
the ``stretch`` the suite used before it honoured the product's choice.

The suite loaded every set stretched to a square, but ``inspection train`` (``--fit auto``)
letterboxes a set whose aspect ratios vary (``inspection.geometry.choose_fit``): mt-exp's
training tiles run from 0.36 to 2.6 (w / h), so the product pads them. This runs
``inspection.bench.suite.bench_cell`` with the product's choice (now the suite's default too); metrics
are taken on each image's valid box (``inspection.evaluation.comparison_pixels``). Test labels
choose nothing.

    PYTHONPATH=. .venv/bin/python bench/explore/suite_fit.py mt-exp patchcore,padim /tmp/fitx
"""

import json
import sys
from pathlib import Path

from inspection.bench import suite

FIT = "auto"


def main() -> None:
    dataset, keys, out = sys.argv[1], sys.argv[2].split(","), Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    for key in keys:
        row = suite.bench_cell(dataset, key, Path("../shared/data"), False, None, None, FIT)
        path = out / f"{dataset}-{key}.json"
        path.write_text(json.dumps(suite._jsonable(row), indent=1))
        print(
            key,
            {k: row.get(k) for k in ("image_auroc", "pixel_auroc", "aupro", "fit_seconds")},
            flush=True,
        )


if __name__ == "__main__":
    main()
