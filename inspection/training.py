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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from inspection.data.imageset import ImageSet
from inspection.detectors import registry
from inspection.detectors.base import Detector, ProgressFn, images_to_tensor, no_progress
from inspection.errors import DatasetError
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
    #: How ``detector: auto`` chose this detector among its candidates (:func:`train_auto`).
    auto_selection: dict[str, Any] | None = None
    #: Loud caveats about this model (e.g. a threshold resting on few held-out images).
    warnings: tuple[str, ...] = ()
    #: How images become the square input (:mod:`inspection.geometry`), from the training set.
    fit: str = "stretch"
    #: The held-out normal images (N, S, S, 3) uint8 the thresholds were set on, kept for the
    #: export's precision check (:mod:`inspection.precision`); not saved with the bundle.
    holdout: np.ndarray | None = field(default=None, repr=False)


#: Fewer normal images than this are refused: the threshold would rest on one or two
#: held-out images and the detector on a handful of examples.
MIN_NORMALS = 10
#: Below this many held-out normal images the threshold (a high quantile of their scores) is
#: in effect their maximum: training goes on, with a warning in the log and in ``model.json``.
MIN_CONFIDENT_VAL = 20


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
    """Fit ``detector`` on normal images and set thresholds on a held-out normal split.

    Raises :class:`DatasetError` below :data:`MIN_NORMALS` images.
    """
    check_normals(len(normals))
    fit_set, val_set = split_validation(normals, val_fraction, detector.config.seed)
    return fit_and_calibrate(detector, fit_set, val_set, quantile, progress)


def check_normals(n: int) -> None:
    """Refuse to train on fewer than :data:`MIN_NORMALS` normal images."""
    if n < MIN_NORMALS:
        raise DatasetError(
            f"{n} normal images are too few to train on: need at least {MIN_NORMALS} "
            f"(better {round(MIN_CONFIDENT_VAL / 0.15)} or more, so that {MIN_CONFIDENT_VAL} "
            "held-out images set the threshold)"
        )


def fit_and_calibrate(
    detector: Detector,
    fit_set: ImageSet,
    val_set: ImageSet,
    quantile: float = 0.99,
    progress: ProgressFn = no_progress,
) -> TrainedModel:
    """Fit ``detector`` on ``fit_set``; choose open settings and thresholds on ``val_set``."""
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
    warnings: tuple[str, ...] = ()
    if len(val_set) < MIN_CONFIDENT_VAL:
        warnings = (
            f"the image threshold rests on only {len(val_set)} held-out normal images "
            f"(fewer than {MIN_CONFIDENT_VAL}): it is about their maximum score, so expect "
            "false alarms; photograph more good parts and retrain",
        )
        logger.warning("%s: %s", detector.key, warnings[0])
    return TrainedModel(
        detector,
        cal,
        fit_seconds,
        len(fit_set),
        len(val_set),
        selection,
        detector.epoch_selection,
        warnings=warnings,
        fit=fit_set.fit,
        holdout=val_set.images,
    )


@dataclass(frozen=True)
class Candidate:
    """One setting ``detector: auto`` tries: a name and a detector config mapping."""

    name: str
    config: dict[str, Any]

    @property
    def image_size(self) -> int:
        return int(self.config.get("image_size", 256))


def auto_candidates(size: int = 256) -> tuple[Candidate, ...]:
    """What ``detector: auto`` tries at base side ``size``, cheapest first (ties keep the
    earlier): the per-position Gaussian (fast, strong on parts that sit still), the
    position-invariant patch memory, and the patch memory at 1.25 x the side (a multiple of
    32) for small defects.

    Tried and not adopted: PatchCore without neighbourhood averaging (``neighbourhood: 1``) as
    a candidate of its own, which found ``mvtec_screw``'s small defects better on the test set
    (0.965-0.972 against 0.935-0.951) but which the painted validation, judged at the load side
    :func:`train_auto` uses, ranked below plain PatchCore there (0.959 / 0.952 against 0.962 /
    0.963): it would not have been chosen where it helps
    (``bench/results/explore/auto-candidates.md``). PatchCore now keeps that fine bank next to
    its averaged one by default (``fine_bank``), so no choice is needed. PaDiM at 320 px as a
    fourth candidate: the painted validation would pick it on letterboxed ``mt-exp`` (0.868
    against 0.834), where it scores 0.949 on the test images against PaDiM's 0.952
    (``bench/results/explore/auto-padim320.md``).
    """
    high = max(size + 32, round(size * 1.25 / 32) * 32)
    return (
        Candidate("padim", {"type": "padim", "image_size": size}),
        Candidate("patchcore", {"type": "patchcore", "image_size": size}),
        Candidate(f"patchcore@{high}", {"type": "patchcore", "image_size": high}),
    )


#: The default candidates (base side 256: padim, patchcore, patchcore@320).
AUTO_CANDIDATES: tuple[Candidate, ...] = auto_candidates(256)
#: Side at which :func:`train_auto` wants its normal images: the largest candidate's.
AUTO_LOAD_SIZE = max(c.image_size for c in AUTO_CANDIDATES)
#: The same choice at smoke-test sizes (``--quick``: 64 and 80 px, small banks).
QUICK_AUTO_CANDIDATES: tuple[Candidate, ...] = (
    Candidate("padim", {"type": "padim", "image_size": 64}),
    Candidate("patchcore", {"type": "patchcore", "image_size": 64, "max_bank": 256}),
    Candidate("patchcore@80", {"type": "patchcore", "image_size": 80, "max_bank": 256}),
)
QUICK_AUTO_LOAD_SIZE = max(c.image_size for c in QUICK_AUTO_CANDIDATES)


def train_auto(
    normals: ImageSet,
    val_fraction: float = 0.15,
    quantile: float = 0.99,
    progress: ProgressFn = no_progress,
    candidates: Sequence[Candidate] | None = None,
    seed: int = 0,
    quick: bool = False,
) -> TrainedModel:
    """``detector: auto``: train every candidate, keep the one that finds painted defects best.

    ``normals`` are square images at any side at least the largest candidate's
    (:data:`AUTO_LOAD_SIZE`; ``quick``: :data:`QUICK_AUTO_CANDIDATES`); each candidate sees them resized to its own ``image_size``. One
    normal validation split is held out for all candidates; subtle synthetic defects
    (:func:`inspection.validation.subtle_defects`) are painted onto it once, at the loaded
    side, so every candidate is judged on the same defects. The candidate with the highest
    image AUROC (clean against painted validation images) is kept, ties going to the earlier
    (cheaper) one. No test image or label is seen. Returns the chosen candidate's
    :class:`TrainedModel` with ``auto_selection`` = ``{"validation", "n_normal",
    "n_painted", "candidates": {name: {"detector", "image_size", "image_auroc",
    "pixel_auroc", "fit_seconds"}}, "chosen", "reason"}``.
    """
    from inspection.validation import SUBTLE_VALIDATION, subtle_defects

    if candidates is None:
        candidates = QUICK_AUTO_CANDIDATES if quick else AUTO_CANDIDATES
    if not candidates:
        raise ValueError("detector: auto needs at least one candidate")
    check_normals(len(normals))
    fit_all, val_all = split_validation(normals, val_fraction, seed)
    painted, masks = subtle_defects(val_all.images, copies=2, seed=seed)
    painted_set = ImageSet(
        painted,
        masks > 0,
        ["synthetic"] * len(painted),
        [f"painted-{i}" for i in range(len(painted))],
    )
    records: dict[str, dict[str, Any]] = {}
    best: tuple[float, TrainedModel] | None = None
    best_name = ""
    for k, cand in enumerate(candidates):
        progress(f"auto: candidate {cand.name}", k, len(candidates))
        detector = registry.create({**cand.config, "seed": seed})
        size = detector.config.image_size
        trained = fit_and_calibrate(
            detector, fit_all.resized(size), val_all.resized(size), quantile, progress
        )
        record = _judge(trained, val_all.resized(size), painted_set.resized(size))
        records[cand.name] = record
        logger.info(
            "auto: %s image AUROC %.3f on painted validation defects (fit %.0f s)",
            cand.name,
            record["image_auroc"],
            record["fit_seconds"],
        )
        if best is None or record["image_auroc"] > best[0]:
            best, best_name = (record["image_auroc"], trained), cand.name
    progress("auto: candidates", len(candidates), len(candidates))
    assert best is not None
    ranked = sorted(records, key=lambda n: -records[n]["image_auroc"])
    others = ", ".join(f"{n} {records[n]['image_auroc']:.3f}" for n in ranked if n != best_name)
    reason = (
        f"{best_name} separated painted from clean validation images best (image AUROC "
        f"{best[0]:.3f}{'; ' + others if others else ''})"
    )
    chosen = best[1]
    chosen.auto_selection = {
        "validation": SUBTLE_VALIDATION,
        "n_normal": len(val_all),
        "n_painted": len(painted_set),
        "candidates": records,
        "chosen": best_name,
        "reason": reason,
    }
    logger.info("auto: chose %s", reason)
    return chosen


def _judge(trained: TrainedModel, normals: ImageSet, painted: ImageSet) -> dict[str, Any]:
    """Image and pixel AUROC of ``trained`` on clean ``normals`` against ``painted`` copies."""
    from inspection.evaluation import _auroc, pixel_auroc

    det = trained.detector
    clean, dirty = det.predict(normals.images), det.predict(painted.images)
    scores = np.concatenate([clean.score, dirty.score])
    target = torch.cat([torch.zeros(len(normals)), torch.ones(len(painted))]).long()
    image = _auroc(torch.from_numpy(scores), target)
    s = 4  # every 4th pixel each way: plenty for a ranking, 16x less work
    maps = np.concatenate([clean.anomaly_map, dirty.anomaly_map])[:, 0, ::s, ::s]
    truth = np.concatenate([normals.masks, painted.masks])[:, ::s, ::s]
    pixel = pixel_auroc(maps, truth)
    return {
        "detector": det.key,
        "image_size": det.config.image_size,
        "image_auroc": float("nan") if image is None else round(image, 4),
        "pixel_auroc": None if pixel is None else round(pixel, 4),
        "fit_seconds": round(trained.fit_seconds, 1),
    }


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
        "auto_selection": model.auto_selection,
        "warnings": list(model.warnings),
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
    holdout: np.ndarray | None = None,
    check_precision: bool = True,
    compress_weights: bool = True,
) -> Path:
    """Save the torch detector and its OpenVINO IR + ``model.json`` into ``directory``.

    ``int8`` quantises with nncf post-training quantisation on ``calibration_images`` (normal
    images (N, S, S, 3) uint8, e.g. the validation set). The scoring heads stay in float
    (``_FLOAT_HEAD_OPS`` and the map smoothing): Mahalanobis distances of PaDiM and CutPaste
    span orders of magnitude that 8 bits cannot hold, and collapsed to one score. Quantisation
    shifts scores, so the thresholds of an int8 bundle are re-set from its own scores on the same
    normal images (same quantile as the float calibration).

    ``check_precision``: score held-out normal images (``holdout``, else the ones the model was
    calibrated on) and defects painted onto them at f32 and bf16, and record in ``model.json``
    (``runtime_precision``) whether bf16 keeps the verdicts (:mod:`inspection.precision`); a
    station with ``inference_precision: auto`` runs bf16 only then. When plain bf16 does not
    (``fp32`` exports), the IR is saved again with the backbone's stem (then stem and scoring
    head) marked to stay f32 under bf16, and kept when that mixed graph keeps the verdicts.

    ``compress_weights`` (``fp32`` exports only): when bf16 passed that check, store the weights
    as fp16 if f32 and bf16 on the fp16 file still keep the f32 weights' verdicts (half the
    file, much less resident memory in a station); ``model.json`` ``weights`` says which
    (``f32``, ``fp16``, ``int8``). A bundle whose check fails keeps f32 weights.
    """
    import openvino as ov

    from inspection.ov_export import to_openvino

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    det = model.detector
    det.save(out / "torch")
    size = det.config.image_size
    graph = det.deployable()
    example = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        graph(example)  # fills shape-dependent constant caches (GaussianBlur) before tracing
        ov_model = to_openvino(graph, example)
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
    meta["weights"] = {"fp16": "fp16", "int8": "int8"}.get(precision, "f32")
    (out / "model.json").write_text(json.dumps(meta, indent=2))
    if precision == "int8":
        assert calibration_images is not None
        meta["calibration"] = _recalibrate(out, calibration_images, model.calibration.quantile)
        meta["calibration_source"] = "int8 graph on the quantisation images (normal)"
        (out / "model.json").write_text(json.dumps(meta, indent=2))
    if check_precision:
        from inspection.precision import check_runtime_precision

        normals = holdout if holdout is not None else model.holdout
        if normals is not None and normals.shape[1:3] != (size, size):
            normals = None  # held out at another size (``auto`` candidates): not comparable
        record = check_runtime_precision(
            out,
            normals,
            seed=det.config.seed,
            ov_model=ov_model if precision == "fp32" and compress_weights else None,
        )
        meta["runtime_precision"] = record
        meta["weights"] = record["weights"]
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
        meta.get("auto_selection"),
        tuple(meta.get("warnings", ())),
        fit=str(meta["input"].get("fit", "stretch")),
    )
