"""One engine for every detector: fit, calibrate on normal validation images, save, export.

A trained model travels as a *bundle* directory::

    <bundle>/torch/detector.json, weights.pt   training-side detector (torch)
    <bundle>/model.xml, model.bin              OpenVINO IR of the deployable graph
    <bundle>/model.json                        metadata: detector, input contract, calibration

``model.json`` + IR are all a station needs (see :mod:`inspection.runtime`): preprocessing
(resize to ``input.size``, RGB, [0, 1]), normalisation (inside the graph) and thresholds travel
with the model.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from inspection.data.imageset import ImageSet
from inspection.detectors import registry
from inspection.detectors.base import Detector, ProgressFn, images_to_tensor, no_progress
from inspection.evaluation import Calibration, calibrate
from inspection.runtime import BUNDLE_FORMAT, read_metadata

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "int8"]


@dataclass
class TrainedModel:
    """A fitted detector with its calibration (thresholds from normal validation images)."""

    detector: Detector
    calibration: Calibration
    fit_seconds: float
    n_train: int
    n_val: int
    #: How ``score_mode="auto"`` was resolved (:func:`inspection.validation.select_score_mode`).
    score_selection: dict[str, Any] | None = None
    #: Which training epoch was kept (:class:`inspection.validation.EpochSelector`).
    epoch_selection: dict[str, Any] | None = None
    #: How images become the square input (:mod:`inspection.geometry`), from the training set.
    fit: str = "stretch"


def split_validation(
    normals: ImageSet, fraction: float = 0.15, seed: int = 0
) -> tuple[ImageSet, ImageSet]:
    """(fit set, validation set): a seeded random ``fraction`` of normal images held out."""
    if not 0.0 < fraction < 1.0:
        raise ValueError("validation fraction must be in (0, 1)")
    order = np.random.default_rng(seed).permutation(len(normals))
    n_val = max(1, round(len(normals) * fraction))
    if n_val >= len(normals):
        raise ValueError(f"need more than {n_val} normal images to hold out a validation set")
    return normals.subset(np.sort(order[n_val:])), normals.subset(np.sort(order[:n_val]))


def train(
    detector: Detector,
    normals: ImageSet,
    val_fraction: float = 0.15,
    quantile: float = 0.99,
    progress: ProgressFn = no_progress,
) -> TrainedModel:
    """Fit ``detector`` on normal images and set thresholds on a held-out normal split."""
    fit_set, val_set = split_validation(normals, val_fraction, detector.config.seed)
    if getattr(detector.config, "epoch_selection", "last") == "synthetic":
        from inspection.validation import make_validator

        detector.validator = make_validator(detector, val_set.images, detector.config.seed)
    start = time.perf_counter()
    try:
        detector.fit(fit_set.images, progress)
    finally:
        detector.validator = None
    fit_seconds = time.perf_counter() - start
    selection = None
    if detector.score_mode_pending:
        from inspection.validation import select_score_mode

        selection = select_score_mode(detector, val_set.images, detector.config.seed, progress)
    val = detector.predict(val_set.images)
    cal = calibrate(val.score, val.anomaly_map, quantile)
    logger.info(
        "%s: fitted on %d normals in %.1fs; image threshold %.4g (q=%.2f on %d validation normals)",
        detector.key,
        len(fit_set),
        fit_seconds,
        cal.image_threshold,
        quantile,
        len(val_set),
    )
    return TrainedModel(
        detector,
        cal,
        fit_seconds,
        len(fit_set),
        len(val_set),
        selection,
        detector.epoch_selection,
        fit=normals.fit,
    )


def _metadata(
    model: TrainedModel, precision: Precision, extra: dict[str, Any] | None
) -> dict[str, Any]:
    det = model.detector
    return {
        "format": BUNDLE_FORMAT,
        "detector": det.key,
        "paper": det.paper,
        "config": det.config.model_dump(mode="json"),
        "input": {
            "size": det.config.image_size,
            "layout": "NCHW",
            "dtype": "float32",
            "range": [0.0, 1.0],
            "color": "RGB",
            "fit": model.fit,
        },
        "outputs": ["score", "anomaly_map"],
        "precision": precision,
        "calibration": model.calibration.to_dict(),
        "fit_seconds": model.fit_seconds,
        "n_train": model.n_train,
        "n_val": model.n_val,
        "score_selection": model.score_selection,
        "epoch_selection": model.epoch_selection,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **(extra or {}),
    }


#: Operation types left in float by int8 export: the scoring heads (distances, normalisation,
#: reductions, map upsampling). Convolutions and residual additions of the networks are quantised;
#: so is everything a detector computes with these types inside its network (rarely needed).
_FLOAT_HEAD_OPS = (
    "MatMul",
    "Multiply",
    "Divide",
    "Subtract",
    "Power",
    "Sqrt",
    "Exp",
    "Softmax",
    "Maximum",
    "Minimum",
    "ReduceMean",
    "ReduceL2",
    "ReduceSum",
    "ReduceMax",
    "Interpolate",
    "Pad",
    "Concat",
)


def export_openvino(
    model: TrainedModel,
    directory: str | Path,
    precision: Precision = "fp32",
    calibration_images: np.ndarray | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> Path:
    """Save the torch detector and its OpenVINO IR + ``model.json`` into ``directory``.

    ``int8`` quantises with nncf post-training quantisation on ``calibration_images`` (normal
    images (N, S, S, 3) uint8, e.g. the validation set). The scoring heads stay in float
    (``_FLOAT_HEAD_OPS`` and the map smoothing): Mahalanobis distances of PaDiM and CutPaste
    span orders of magnitude that 8 bits cannot hold, and collapsed to one score. Quantisation
    shifts scores, so the thresholds of an int8 bundle are re-set from its own scores on the same
    normal images (same quantile as the float calibration).
    """
    import openvino as ov

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    det = model.detector
    det.save(out / "torch")
    size = det.config.image_size
    graph = det.deployable()
    example = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        graph(example)  # fills shape-dependent constant caches (GaussianBlur) before tracing
        ov_model = ov.convert_model(graph, example_input=example)
    ov_model.reshape({0: ov.PartialShape([-1, 3, size, size])})
    if precision == "int8":
        import nncf

        if calibration_images is None or len(calibration_images) == 0:
            raise ValueError("int8 export needs calibration_images (normal images)")
        data = [
            images_to_tensor(calibration_images[i : i + 1]).numpy()
            for i in range(len(calibration_images))
        ]
        ov_model = nncf.quantize(
            ov_model,
            nncf.Dataset(data),
            subset_size=min(300, len(data)),
            ignored_scope=nncf.IgnoredScope(
                types=list(_FLOAT_HEAD_OPS), patterns=[".*blur.*"], validate=False
            ),
        )
    ov.save_model(ov_model, out / "model.xml", compress_to_fp16=precision == "fp16")
    meta = _metadata(model, precision, extra_metadata)
    (out / "model.json").write_text(json.dumps(meta, indent=2))
    if precision == "int8":
        assert calibration_images is not None
        meta["calibration"] = _recalibrate(out, calibration_images, model.calibration.quantile)
        meta["calibration_source"] = "int8 graph on the quantisation images (normal)"
        (out / "model.json").write_text(json.dumps(meta, indent=2))
    logger.info("exported %s (%s) to %s", det.key, precision, out)
    return out


def _recalibrate(bundle: Path, images: np.ndarray, quantile: float) -> dict[str, float]:
    """Thresholds of the exported graph in ``bundle`` from its scores on normal ``images``."""
    from inspection.runtime import OpenVinoModel

    ov_model = OpenVinoModel(bundle)
    scores, maps = [], []
    for i in range(0, len(images), 8):
        pred = ov_model.predict(images[i : i + 8])
        scores.append(pred.raw_score)
        maps.append(pred.anomaly_map[:, None])
    return calibrate(np.concatenate(scores), np.concatenate(maps), quantile).to_dict()


def load_trained(directory: str | Path) -> TrainedModel:
    """Reload the torch side of a bundle written by :func:`export_openvino`."""
    path = Path(directory)
    meta = read_metadata(path)
    detector = registry.get(meta["detector"]).load(path / "torch")
    return TrainedModel(
        detector,
        Calibration.from_dict(meta["calibration"]),
        float(meta.get("fit_seconds", 0.0)),
        int(meta.get("n_train", 0)),
        int(meta.get("n_val", 0)),
        meta.get("score_selection"),
        meta.get("epoch_selection"),
        fit=str(meta["input"].get("fit", "stretch")),
    )
