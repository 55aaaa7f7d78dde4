"""Building and exporting a candidate model from the root model and the labelled data.

A candidate bundle is an ordinary ``inspection-model/1`` bundle (:mod:`inspection.training`), so
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from inspection.data.imageset import ImageSet
from inspection.detectors.base import Detector, ProgressFn, no_progress
from inspection.evaluation import Calibration, calibrate
from inspection.loop.config import RetrainSettings
from inspection.loop.gate import threshold_for_recall
from inspection.loop.refiner import RefinerInputs, RefinerParams, fit_refiner
from inspection.runtime import read_metadata
from inspection.training import TrainedModel

logger = logging.getLogger(__name__)

LOOP_DIR = "loop"


def root_bundle(bundle: str | Path) -> Path:
    """The root of a bundle: itself, unless the loop built it (then its recorded root)."""
    meta = read_metadata(bundle)
    root = (meta.get("loop") or {}).get("root_bundle")
    return Path(root) if root else Path(bundle)


class PooledFeatures:
    """Pooled ImageNet backbone features of whole images (the refiner's ``pooled`` input).

    Wraps :class:`inspection.openset.features.FeatureExtractor` (Lite0 last stage, avg + max
    pooling, OpenVINO on CPU) at the model's input size, with an in-memory cache keyed by image
    content, so the same image is never run twice within a process (the benchmark shares one
    instance between cycles).
    """

    def __init__(self, size: int) -> None:
        from inspection.openset.config import FeatureConfig
        from inspection.openset.features import FeatureExtractor

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
        defect_crops: M crops of the strongest region as stored (typer inputs when
            ``defect_frames`` is empty).
        defect_frames: M full frames; when given, the typer trains on crops re-cut around the
            candidate's own anomaly map, i.e. what the station will crop after promotion.
        roi: the station's region of interest in frame pixels.
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
    defect_frames: list[np.ndarray] = field(default_factory=list)
    roi: tuple[int, int, int, int] | None = None


@dataclass
class Candidate:
    """A trained candidate: detector + calibration (as :class:`TrainedModel`), extras."""

    trained: TrainedModel
    refiner: RefinerParams | None
    typer: Any | None  # inspection.openset.classifier.OpenSetTyper
    pooled: PooledFeatures | None
    info: dict[str, Any] = field(default_factory=dict)
    patch_refiner: Any | None = None  # inspection.loop.patch_refiner.PatchRefinerParams

    @property
    def refined(self) -> bool:
        """Whether the exported score is a refined (supervised) one."""
        return self.refiner is not None or self.patch_refiner is not None


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


def refiner_mode(detector: Detector, settings: RetrainSettings) -> str:
    """``patch`` or ``image`` (see :class:`~inspection.loop.config.RefinerConfig`)."""
    mode = settings.refiner.mode
    if mode == "auto":
        return "patch" if detector.key == "padim" else "image"
    if mode == "patch" and detector.key != "padim":
        from inspection.errors import ConfigError

        raise ConfigError(f"refiner mode 'patch' needs a padim detector, not {detector.key}")
    return mode


def _folds(labels: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    n = int(min(k, np.bincount(labels.astype(int), minlength=2).min()))
    if n < 2:
        return []
    return list(
        StratifiedKFold(n, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)
    )


def _calibration(
    normal_scores: np.ndarray,
    all_scores: np.ndarray,
    threshold: float,
    normal_maps: np.ndarray,
    settings: RetrainSettings,
) -> Calibration:
    """Calibration of a refined model: the one-class pixel threshold and map range of the
    in-sample normal maps, the image threshold and score range of the out-of-fold scores."""
    one_class = calibrate(normal_scores, normal_maps, settings.quantile)
    return replace(
        one_class,
        image_threshold=threshold,
        score_min=float(min(normal_scores.min(), threshold)),
        score_max=float(max(np.quantile(all_scores, 0.99), threshold + 1e-6)),
    )


def _patch_refiner(
    root_detector: Detector,
    data: TrainingData,
    settings: RetrainSettings,
    progress: ProgressFn,
) -> Callable[[Detector], tuple[Any, Calibration, dict[str, Any], np.ndarray]]:
    """Collect what the patch refiner needs from the root detector (before it is updated),
    and return the function that finishes the job on the candidate detector."""
    from inspection.loop.patch_refiner import padim_maps

    confirmed = padim_maps(root_detector, data.confirmed_normals, progress)

    def finish(detector: Detector) -> tuple[Any, Calibration, dict[str, Any], np.ndarray]:
        from inspection.loop.patch_refiner import (
            PatchMaps,
            fit_patch_refiner,
            one_class_scores,
            refined_maps,
        )

        cfg = settings.refiner
        size = detector.config.image_size
        seed = settings.holdout.seed or 0
        defects = padim_maps(detector, data.defects, progress)
        refs = padim_maps(detector, data.ref_normals, progress)
        normals = PatchMaps.concat([refs, confirmed]) if len(confirmed) else refs

        def fit(d: PatchMaps, n: PatchMaps) -> Any:
            return fit_patch_refiner(
                d,
                n,
                top_k=cfg.top_k,
                c=cfg.c,
                max_normal_patches=cfg.max_normal_patches,
                seed=seed,
            )

        labels = np.r_[np.ones(len(defects)), np.zeros(len(normals))]
        oof = np.zeros(len(labels))
        for j, (tr, va) in enumerate(_folds(labels, cfg.cv_folds, seed)):
            d_tr = tr[tr < len(defects)]
            n_tr = tr[tr >= len(defects)] - len(defects)
            fold = fit(defects.take(d_tr), normals.take(n_tr))
            both = PatchMaps.concat([defects, normals])
            oof[va] = refined_maps(detector, fold, both.take(va), size)[0]
            progress("patch refiner: cross-fitting", j + 1, cfg.cv_folds)
        params = fit(defects, normals)
        if cfg.guard_quantile is not None:
            one = one_class_scores(detector, refs, size)
            params.guard = float(np.quantile(one, cfg.guard_quantile))
            spread = float(np.std(oof[labels == 0])) or 1.0
            params.guard_scale = float(np.std(one) or 1.0) / spread
        threshold, tinfo = _threshold(oof[labels == 0], oof[labels == 1], settings)
        params.threshold = threshold
        _, ref_maps = refined_maps(detector, params, refs, size)
        calibration = _calibration(oof[labels == 0], oof, threshold, ref_maps, settings)
        info = {"refiner": params.summary(), "threshold": tinfo}
        return params, calibration, info, refined_maps(detector, params, defects, size)[1]

    return finish


def _image_refiner(
    root_detector: Detector,
    data: TrainingData,
    settings: RetrainSettings,
    pooled: PooledFeatures | None,
    progress: ProgressFn,
) -> Callable[[Detector], tuple[Any, Calibration, dict[str, Any], np.ndarray]]:
    """Like :func:`_patch_refiner` for the image-level refiner (any detector)."""
    confirmed_out = _outputs(root_detector, data.confirmed_normals)  # before the update

    def finish(detector: Detector) -> tuple[Any, Calibration, dict[str, Any], np.ndarray]:
        features = pooled or PooledFeatures(detector.config.image_size)
        ref_scores, ref_maps = _outputs(detector, data.ref_normals)
        defect_scores, defect_maps = _outputs(detector, data.defects)
        outs = [(defect_scores, defect_maps), confirmed_out, (ref_scores, ref_maps)]
        images = [data.defects, data.confirmed_normals, data.ref_normals]
        parts = []
        for (scores, maps), im in zip(outs, images, strict=True):
            feats = features(im, progress) if len(im) else np.zeros((0, 2560), np.float32)
            parts.append(RefinerInputs.from_outputs(scores, maps, feats))
        dim = max(p.pooled.shape[1] for p in parts)
        parts = [
            p
            if len(p)
            else RefinerInputs.from_outputs(p.score, np.zeros((0, 1)), np.zeros((0, dim)))
            for p in parts
        ]
        train = RefinerInputs.concat(parts)
        labels = np.r_[np.ones(len(parts[0])), np.zeros(len(parts[1]) + len(parts[2]))]
        cfg = settings.refiner
        params, oof = fit_refiner(
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
        params.threshold = threshold
        calibration = _calibration(oof[labels == 0], oof, threshold, ref_maps, settings)
        info = {"refiner": {"kind": "image", **params.summary()}, "threshold": tinfo}
        return (params, features), calibration, info, defect_maps

    return finish


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

    ``root`` is changed in place (its detector becomes the candidate's when updating). What the
    refiner learns about the confirmed normals comes from the root detector *before* they are
    merged into it, so it sees what a model that never fitted them says about them.
    """
    info: dict[str, Any] = {}
    if len(data.ref_normals) == 0:
        from inspection.errors import DatasetError

        raise DatasetError("no held-out normal images to calibrate the candidate on")
    cfg = settings.refiner
    use_refiner = (
        cfg.enabled
        and len(data.defects) >= cfg.min_defects
        and len(data.ref_normals) + len(data.confirmed_normals) >= cfg.min_normals
        and len(data.ref_normals) >= 2
    )
    stage("detector")
    finish: Callable[[Detector], tuple[Any, Calibration, dict[str, Any], np.ndarray]] | None = None
    mode = refiner_mode(root.detector, settings) if use_refiner else None
    if mode == "patch":
        finish = _patch_refiner(root.detector, data, settings, progress)
    elif mode == "image":
        finish = _image_refiner(root.detector, data, settings, pooled, progress)
    detector, n_train, strategy = build_detector(root, data, settings, progress)
    info.update(
        detector_strategy=strategy, n_train=n_train, confirmed_normals=len(data.confirmed_normals)
    )
    stage("refiner")
    refiner: RefinerParams | None = None
    patch: Any | None = None
    features: PooledFeatures | None = None
    if finish is not None:
        fitted, calibration, rinfo, defect_maps = finish(detector)
        info.update(rinfo)
        if mode == "patch":
            patch = fitted
        else:
            refiner, features = fitted
    else:
        ref_scores, ref_maps = _outputs(detector, data.ref_normals)
        defect_scores, defect_maps = _outputs(detector, data.defects)
        one_class = calibrate(ref_scores, ref_maps, settings.quantile)
        threshold, tinfo = _threshold(ref_scores, defect_scores, settings)
        calibration = replace(
            one_class,
            image_threshold=threshold,
            score_max=max(one_class.score_max, threshold + 1e-6),
        )
        info.update(refiner=None, threshold=tinfo)
    trained = TrainedModel(
        detector,
        calibration,
        0.0,
        n_train,
        len(data.ref_normals),
        fit=root.fit,
        holdout=data.ref_normals,
    )
    candidate = Candidate(trained, refiner, None, features, info, patch)
    stage("typer")
    crops = data.defect_crops
    if data.defect_frames:
        from inspection.loop.dataset import station_crop

        crops = [
            station_crop(frame, amap, calibration.pixel_threshold, data.roi, fit=root.fit)
            for frame, amap in zip(data.defect_frames, defect_maps, strict=True)
        ]
    candidate.typer = train_typer(data, settings, progress, crops=crops)
    info["typer"] = (
        {
            "classes": candidate.typer.classes,
            "threshold": candidate.typer.threshold,
            "known_accept_rate": candidate.typer.config.known_accept_rate,
        }
        if candidate.typer is not None
        else None
    )
    return candidate


def typer_classes(types: list[str | None], settings: RetrainSettings) -> list[str]:
    """Defect types with enough labelled crops to be learned (sorted)."""
    from collections import Counter

    counts = Counter(t for t in types if t)
    return sorted(t for t, n in counts.items() if n >= settings.typer.min_per_type)


def typer_config(settings: RetrainSettings, n_per_class_min: int) -> Any:
    """The :class:`~inspection.openset.config.TyperConfig` the loop trains with."""
    from inspection.openset.config import FeatureConfig, HeadConfig, TyperConfig, method_config

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
        known_accept_rate=t.known_accept_rate,
        calibration_folds=int(max(2, min(5, n_per_class_min))),
        seed=settings.holdout.seed or 0,
    )


def train_typer(
    data: TrainingData,
    settings: RetrainSettings,
    progress: ProgressFn = no_progress,
    crops: list[np.ndarray] | None = None,
) -> Any | None:
    """An open-set typer on the labelled crops (``crops``, default ``data.defect_crops``), or
    None when the labels are too few."""
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
    from inspection.openset.classifier import OpenSetTyper
    from inspection.openset.typer_runtime import resize_images

    keep = [i for i, t in enumerate(data.defect_types) if t in classes]
    size = settings.typer.image_size
    source = crops if crops is not None else data.defect_crops
    inputs = np.stack([resize_images(source[i][None], size)[0] for i in keep])
    labels = [str(data.defect_types[i]) for i in keep]
    n_min = min(labels.count(c) for c in classes)
    typer = OpenSetTyper(typer_config(settings, n_min))
    typer.fit(inputs, labels, progress=progress)
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
    from inspection.loop.refiner import RefinedModel
    from inspection.training import export_openvino

    out = Path(directory)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    trained = candidate.trained
    graph: Any = None
    if candidate.patch_refiner is not None:
        from inspection.loop.patch_refiner import PatchRefinedPadim

        graph = PatchRefinedPadim(trained.detector, candidate.patch_refiner).eval()
    elif candidate.refiner is not None:
        assert candidate.pooled is not None
        graph = RefinedModel(
            trained.detector.deployable(), candidate.pooled.module, candidate.refiner
        ).eval()
    if graph is not None:
        proxy = cast(Detector, _RefinedExport(trained.detector, graph))
        trained = TrainedModel(
            proxy,
            trained.calibration,
            trained.fit_seconds,
            trained.n_train,
            trained.n_val,
            fit=trained.fit,
            holdout=trained.holdout,
        )
    meta = {"loop": {**candidate.info, **(extra or {})}}
    meta["loop"]["refined"] = candidate.refined
    export_openvino(trained, tmp, precision=precision, extra_metadata=meta)  # type: ignore[arg-type]
    if candidate.refiner is not None:
        candidate.refiner.save(tmp / LOOP_DIR)
    if candidate.patch_refiner is not None:
        candidate.patch_refiner.save(tmp / LOOP_DIR)
    if candidate.typer is not None:
        candidate.typer.export(tmp / "typing")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
