"""Exploration: write the suite sets (JPEG q95, gray, at the given sides) for
``patchcore_gpu_sweep.py`` into ``.gpu/`` (git-ignored via .git/info/exclude; a working copy for
one device run, deleted afterwards, never committed).

    PYTHONPATH=. .venv/bin/python bench/explore/patchcore_gpu_prep.py 256

The Lite0 weights go alongside as ``.gpu/lite0.pt`` (timm layout, fp16): build them with
``inspection.backbone.install_offline_weights`` and ``timm.create_model(..., pretrained=True)``.
"""

import pickle
import sys
from pathlib import Path

import cv2
import numpy as np

from inspection.bench.suite import DATASETS, load_dataset
from inspection.detectors.base import EXPOSURE_CV_LIMIT, exposure_cv


def gray(images: np.ndarray) -> list[bytes]:
    """JPEG q95 of each image's first channel (the suite's images are gray, copied x 3)."""
    return [
        cv2.imencode(".jpg", im[:, :, 0], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
        for im in images
    ]


sizes = [int(s) for s in sys.argv[1].split(",")]
out = Path(".gpu")
root = Path("../shared/data")
for size in sizes:
    for name in ("mt-exp", "elpv_solar", "mvtec_screw"):
        train, test = load_dataset(DATASETS[name], root, size, "stretch")  # as measured
        assert np.array_equal(train.images[..., 0], train.images[..., 1])
        d = {
            "train": gray(train.images),
            "test": gray(test.images),
            "labels": test.labels.astype(np.int8),
            "standardize": bool(exposure_cv(train.images) > EXPOSURE_CV_LIMIT),
        }
        p = out / f"{name}-{size}.pkl"
        p.write_bytes(pickle.dumps(d))
        print(
            name,
            size,
            len(d["train"]),
            len(d["test"]),
            d["standardize"],
            p.stat().st_size // 1024,
            "KB",
            flush=True,
        )
