"""Building and exporting a candidate model from the root model and the labelled data.

A candidate bundle is an ordinary ``inspection-model/1`` bundle (:mod:`inspection.engine`), so
stations load and hot-reload it like any other, plus:

* the score output is the refined score when labelled defects trained a refiner
  (:mod:`inspection.loop.refiner`, inside the OpenVINO graph), else the one-class score;
* ``typing/``: an open-set typer trained on the labelled defect crops (station typing step,
  :mod:`inspection.loop.station_typing`), when there are enough of them;
* ``loop/refiner.npz|json``: the refiner's parameters (documentation and tests; the graph
  already contains them);
* ``model.json`` ``loop``: root bundle, job, training counts, refiner summary, typer classes.

The candidate always starts from the *root* model (the station's newest model that the loop did
not build), so labels are never counted twice across cycles: its detector is the root plus the
currently confirmed normals (closed-form PaDiM update, or a refit on base + confirmed normals).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from inspection.data.imageset import ImageSet
from inspection.detectors.base import Detector, ProgressFn, no_progress
from inspection.engine import TrainedModel
from inspection.evaluation import Calibration, calibrate
from inspection.loop.config import RetrainSettings
from inspection.loop.gate import threshold_for_recall
from inspection.loop.refiner import RefinerInputs, RefinerParams, fit_refiner
from inspection.runtime import read_metadata

logger = logging.getLogger(__name__)

LOOP_DIR = "loop"


def root_bundle(bundle: str | Path) -> Path:
    """The root of a bundle: itself, unless the loop built it (then its recorded root)."""
    meta = read_metadata(bundle)
    root = (meta.get("loop") or {}).get("root_bundle")
    return Path(root) if root else Path(bundle)


class PooledFeatures:
    """Pooled ImageNet backbone features of whole images (the refiner's ``pooled`` input).

    Wraps :class:`inspection.typing.features.FeatureExtractor` (Lite0 last stage, avg + max
    pooling, OpenVINO on CPU) at the model's input size, with an in-memory cache keyed by image
    content, so the same image is never run twice within a process (the benchmark shares one
    instance between cycles).
    """

    def __init__(self, size: int) -> None:
        from inspection.typing.config import FeatureConfig
        from inspection.typing.features import FeatureExtractor

        self.size = size
        self.extractor = FeatureExtractor(
            FeatureConfig(image_size=size, pooling="avgmax", backend="openvino", batch_size=8)
        )
        self._cache: dict[str, np.ndarray] = {}

    @property
    def module(self) -> Any:
        """The torch module (raw [0, 1] RGB in), for the exported graph."""
        return self.extractor.module

    def __call__(self, images: np.ndarray, progress: ProgressFn = no_progress) -> np.ndarray:
        """(N, S, S, 3) uint8 -> (N, D) float32."""
        keys = [hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images]
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        if missing:
            feats = self.extractor.extract(images[missing], progress=progress)
            for i, f in zip(missing, feats, strict=True):
                self._cache[keys[i]] = f
        if not keys:
            return np.zeros((0, self.extractor.out_dim), np.float32)
        return np.stack([self._cache[k] for k in keys])


@dataclass
class TrainingData:
    """What a candidate is trained from (images at the model's input size).

    Attributes:
        confirmed_normals: (K, S, S, 3) operator-confirmed normals of the job's training split.
        defects: (M, S, S, 3) labelled defects of the training split.
        defect_types: M type names (None: defect without a type).
        defect_crops: M crops of the strongest region (typer inputs).
        ref_normals: (R, S, S, 3) root-validation normals never fitted by any model (refiner
            negatives and threshold calibration).
        base: the root's fit normals (needed by ``refit`` only).
    """

    confirmed_normals: np.ndarray
    defects: np.ndarray
    defect_types: list[str | None]
    defect_crops: list[np.ndarray]
    ref_normals: np.ndarray
    base: ImageSet | None = None


@dataclass
class Candidate:
    """A trained candidate: detector + calibration (as :class:`TrainedModel`), extras."""

    trained: TrainedModel
    refiner: RefinerParams | None
    typer: Any | None  # inspection.typing.classifier.OpenSetTyper
    pooled: PooledFeatures | None
    info: dict[str, Any] = field(default_factory=dict)


def _outputs(detector: Detector, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(images) == 0:
        s = detector.config.image_size
        return np.zeros(0, np.float32), np.zeros((0, 1, s, s), np.float32)
    out = detector.predict(images)
    return out.score, out.anomaly_map


def _threshold(
    normal_scores: np.ndarray, defect_scores: np.ndarray, settings: RetrainSettings
) -> tuple[float, dict[str, Any]]:
    """min(quantile of normal scores, threshold catching ``target_recall`` of defects)."""
    t_normal = float(np.quantile(normal_scores, settings.quantile))
    info: dict[str, Any] = {"normal_quantile_threshold": t_normal}
    if len(defect_scores) >= settings.refiner.min_defects:
        t_recall = threshold_for_recall(defect_scores, settings.target_recall)
        info["recall_threshold"] = t_recall
        return min(t_normal, t_recall), info
    return t_normal, info


def build_detector(
    root: TrainedModel,
    data: TrainingData,
    settings: RetrainSettings,
    progress: ProgressFn = no_progress,
) -> tuple[Detector, int, str]:
    """The candidate's one-class detector: (detector, images it represents, strategy used)."""
    from inspection.detectors import registry
    from inspection.loop.detector_update import add_normals, supports_update

    strategy = settings.detector.strategy
    if strategy == "auto":
        strategy = "update" if supports_update(root.detector) else "refit"
    if strategy == "update":
        if not supports_update(root.detector):
            raise ValueError(f"detector {root.detector.key} has no closed-form update; use refit")
        n = add_normals(root.detector, root.n_train, data.confirmed_normals, progress)
        return root.detector, n, "update"
    if data.base is None:
        from inspection.errors import ConfigError

        raise ConfigError(
            "refit needs the root model's normal images: set normals_dir in the retrain "
            "settings (or give the station a synthetic bootstrap)"
        )
    cfg = {**root.detector.config.model_dump(mode="json"), **settings.detector.config}
    detector = registry.create(cfg)
    images = np.concatenate([data.base.images, data.confirmed_normals])
    detector.fit(images, progress)
    return detector, len(images), "refit"


def build_candidate(
    root: TrainedModel,
    data: TrainingData,
    settings: RetrainSettings,
    *,
    pooled: PooledFeatures | None = None,
    progress: ProgressFn = no_progress,
    stage: Callable[[str], None] = lambda name: None,
) -> Candidate:
    """Train the candidate: detector, calibration, optional refiner and typer.

    ``stage(name)`` is called as each phase starts (``detector``, ``refiner``, ``typer``); the
    retrain job records it and may raise there to cancel.

    ``root`` is changed in place (its detector becomes the candidate's when updating). Scores
    of the confirmed normals come from the root detector *before* they are merged into it, so
    the refiner sees what a model that never fitted them says about them.
    """
    info: dict[str, Any] = {}
    n_defects = len(data.defects)
    use_refiner = (
        settings.refiner.enabled
        and n_defects >= settings.refiner.min_defects
        and len(data.ref_normals) + len(data.confirmed_normals) >= settings.refiner.min_normals
        and len(data.ref_normals) >= 2
    )
    stage("detector")
    confirmed_out = (
        _outputs(root.detector, data.confirmed_normals) if use_refiner else None
    )  # before the update
    detector, n_train, strategy = build_detector(root, data, settings, progress)
    info.update(
        detector_strategy=strategy, n_train=n_train, confirmed_normals=len(data.confirmed_normals)
    )
    stage("refiner")
    ref_scores, ref_maps = _outputs(detector, data.ref_normals)
    if len(ref_scores) == 0:
        from inspection.errors import DatasetError

        raise DatasetError("no held-out normal images to calibrate the candidate on")
    one_class = calibrate(ref_scores, ref_maps, settings.quantile)
    defect_scores, defect_maps = _outputs(detector, data.defects)
    refiner: RefinerParams | None = None
    calibration = one_class
    if use_refiner:
        assert confirmed_out is not None
        pooled = pooled or PooledFeatures(detector.config.image_size)
        images = [data.defects, data.confirmed_normals, data.ref_normals]
        feats = [pooled(im, progress) if len(im) else None for im in images]
        dim = next(f.shape[1] for f in feats if f is not None)
        empty = np.zeros((0, dim), np.float32)
        parts = [
            RefinerInputs.from_outputs(
                defect_scores, defect_maps, feats[0] if feats[0] is not None else empty
            ),
            RefinerInputs.from_outputs(*confirmed_out, feats[1] if feats[1] is not None else empty),
            RefinerInputs.from_outputs(
                ref_scores, ref_maps, feats[2] if feats[2] is not None else empty
            ),
        ]
        train = RefinerInputs.concat(parts)
        labels = np.concatenate(
            [np.ones(n_defects), np.zeros(len(data.confirmed_normals) + len(data.ref_normals))]
        )
        cfg = settings.refiner
        refiner, oof = fit_refiner(
            train,
            labels,
            parts[2],
            components=cfg.components,
            c_grid=cfg.c_grid,
            cv_folds=cfg.cv_folds,
            guard_quantile=cfg.guard_quantile,
            seed=settings.holdout.seed or 0,
        )
        threshold, tinfo = _threshold(oof[labels == 0], oof[labels == 1], settings)
        refiner.threshold = threshold
        normal_oof = oof[labels == 0]
        calibration = Calibration(
            image_threshold=threshold,
            pixel_threshold=one_class.pixel_threshold,
            score_min=float(min(normal_oof.min(), threshold)),
            score_max=float(max(np.quantile(oof, 0.99), threshold + 1e-6)),
            map_min=one_class.map_min,
            map_max=one_class.map_max,
            quantile=settings.quantile,
        )
        info.update(refiner=refiner.summary(), threshold=tinfo)
    else:
        threshold, tinfo = _threshold(ref_scores, defect_scores, settings)
        calibration = Calibration(
            image_threshold=threshold,
            pixel_threshold=one_class.pixel_threshold,
            score_min=one_class.score_min,
            score_max=max(one_class.score_max, threshold + 1e-6),
            map_min=one_class.map_min,
            map_max=one_class.map_max,
            quantile=settings.quantile,
        )
        info.update(refiner=None, threshold=tinfo)
    stage("typer")
    typer = train_typer(data, settings, progress)
    info["typer"] = (
        {"classes": typer.classes, "threshold": typer.threshold} if typer is not None else None
    )
    trained = TrainedModel(detector, calibration, 0.0, n_train, len(data.ref_normals))
    return Candidate(trained, refiner, typer, pooled if use_refiner else None, info)


def typer_classes(types: list[str | None], settings: RetrainSettings) -> list[str]:
    """Defect types with enough labelled crops to be learned (sorted)."""
    from collections import Counter

    counts = Counter(t for t in types if t)
    return sorted(t for t, n in counts.items() if n >= settings.typer.min_per_type)


def typer_config(settings: RetrainSettings, n_per_class_min: int) -> Any:
    """The :class:`~inspection.typing.config.TyperConfig` the loop trains with."""
    from inspection.typing.config import FeatureConfig, HeadConfig, TyperConfig, method_config

    t = settings.typer
    return TyperConfig(
        features=FeatureConfig(
            image_size=t.image_size,
            dihedral_views=t.views,
            random_views=t.random_views,
            backend="openvino",
        ),
        head=HeadConfig(epochs=t.epochs),
        method=method_config(t.method),
        quantile=t.quantile,
        calibration_folds=int(max(2, min(5, n_per_class_min))),
        seed=settings.holdout.seed or 0,
    )


def train_typer(
    data: TrainingData, settings: RetrainSettings, progress: ProgressFn = no_progress
) -> Any | None:
    """An open-set typer on the labelled crops, or None when the labels are too few."""
    if not settings.typer.enabled:
        return None
    classes = typer_classes(data.defect_types, settings)
    if len(classes) < settings.typer.min_types:
        logger.info(
            "typer not trained: %d type(s) with >= %d crops (need %d types)",
            len(classes),
            settings.typer.min_per_type,
            settings.typer.min_types,
        )
        return None
    from inspection.typing.classifier import OpenSetTyper
    from inspection.typing.runtime import resize_images

    keep = [i for i, t in enumerate(data.defect_types) if t in classes]
    size = settings.typer.image_size
    crops = np.stack([resize_images(data.defect_crops[i][None], size)[0] for i in keep])
    labels = [str(data.defect_types[i]) for i in keep]
    n_min = min(labels.count(c) for c in classes)
    typer = OpenSetTyper(typer_config(settings, n_min))
    typer.fit(crops, labels, progress=progress)
    return typer


class _RefinedExport:
    """Looks like the candidate's detector to :func:`engine.export_openvino`, exporting the
    refined graph instead of the plain one (the torch side saved is the plain detector)."""

    def __init__(self, detector: Detector, graph: Any) -> None:
        self.detector = detector
        self.graph = graph
        self.key = detector.key
        self.paper = detector.paper
        self.config = detector.config

    def save(self, directory: str | Path) -> Path:
        return self.detector.save(directory)

    def deployable(self) -> Any:
        return self.graph


def export_candidate(
    candidate: Candidate,
    directory: str | Path,
    *,
    precision: str = "fp32",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the candidate bundle to ``directory`` (replaced atomically if it exists)."""
    from inspection.engine import export_openvino
    from inspection.loop.refiner import RefinedModel

    out = Path(directory)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    trained = candidate.trained
    if candidate.refiner is not None:
        assert candidate.pooled is not None
        graph = RefinedModel(
            trained.detector.deployable(), candidate.pooled.module, candidate.refiner
        ).eval()
        proxy = cast(Detector, _RefinedExport(trained.detector, graph))
        trained = TrainedModel(
            proxy, trained.calibration, trained.fit_seconds, trained.n_train, trained.n_val
        )
    meta = {"loop": {**candidate.info, **(extra or {})}}
    meta["loop"]["refined"] = candidate.refiner is not None
    export_openvino(trained, tmp, precision=precision, extra_metadata=meta)  # type: ignore[arg-type]
    if candidate.refiner is not None:
        candidate.refiner.save(tmp / LOOP_DIR)
    if candidate.typer is not None:
        candidate.typer.export(tmp / "typing")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
