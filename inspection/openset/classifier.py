"""Open-set defect typer: names known defect types, flags unknown ones.

Training (:meth:`OpenSetTyper.fit`) takes labelled defect images with **any** label set, so a new
defect type needs labels, not code. It

1. extracts frozen-backbone features of several views of each image (:mod:`.features`),
2. cross-fits the head on ``calibration_folds`` folds (grouped by source image) and scores the
   held-out images as they are, giving out-of-fold unknown scores of *known* defects,
3. sets the unknown threshold at the operating point: the ``known_accept_rate`` quantile of
   those scores (training data only), so about that share of known defects keeps its type,
4. trains the final head on every image and fits the selected method's statistics.

Class-mean methods (``mahalanobis``, ``metric``) can also :meth:`~OpenSetTyper.add_class` at once
from a few images, without retraining. :meth:`~OpenSetTyper.export` writes an OpenVINO graph
plus NumPy scorer that :class:`inspection.openset.typer_runtime.TypingRuntime` runs without torch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inspection.errors import ConfigError, ModelFileError, NotFittedError
from inspection.openset.config import MethodConfig, TyperConfig
from inspection.openset.features import FeatureExtractor, ProgressFn, no_progress
from inspection.openset.head import TypingHead, TypingNetwork, head_outputs, train_head
from inspection.openset.methods import add_class_state, fit_state
from inspection.openset.scoring import (
    MethodScores,
    NetworkOutputs,
    ScorerState,
    TypingResult,
    operating_threshold,
    results,
    score,
)
from inspection.openset.typer_runtime import CALIBRATION_FILE, RUNTIME_FORMAT

logger = logging.getLogger(__name__)

SAVE_FORMAT = "inspection-typer/1"


@dataclass
class Calibration:
    """What cross-fitting on the training images measured (no test data involved).

    Attributes:
        threshold: unknown-score threshold (the ``target`` quantile of ``known_scores``).
        known_scores: (N,) out-of-fold unknown scores of the training images.
        accuracy: out-of-fold closed-set accuracy of the method's label.
        folds: number of cross-fitting folds used.
        target: the operating point asked for (share of known defects that keep their type).
    """

    threshold: float
    known_scores: np.ndarray = field(repr=False)
    accuracy: float
    folds: int
    target: float = 0.95

    @property
    def known_accept_rate(self) -> float:
        """Share of out-of-fold known scores at or below the threshold (what was reached)."""
        if self.known_scores.size == 0:
            return float("nan")
        return float((self.known_scores <= self.threshold).mean())

    def summary(self) -> dict[str, Any]:
        """JSON-ready operating point: target, threshold and the rates measured out-of-fold."""
        return {
            "threshold": self.threshold,
            "known_accept_rate_target": self.target,
            "known_accept_rate_oof": self.known_accept_rate,
            "oof_accuracy": self.accuracy,
            "folds": self.folds,
            "n_train": int(self.known_scores.size),
        }


def _as_views(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    if features.ndim == 2:
        return features[:, None, :]
    if features.ndim != 3:
        raise ConfigError(f"features must be (N, D) or (N, V, D), got shape {features.shape}")
    return features


def _encode(labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    return classes, np.array([index[c] for c in labels], dtype=np.int64)


def _fit_on(
    views: np.ndarray, y: np.ndarray, n_classes: int, config: TyperConfig, seed: int
) -> TypingHead:
    n, v, d = views.shape
    return train_head(views.reshape(n * v, d), np.repeat(y, v), n_classes, config.head, seed)


def fit_shared(
    features: np.ndarray,
    labels: Sequence[str],
    config: TyperConfig,
    methods: Sequence[MethodConfig],
    progress: ProgressFn = no_progress,
) -> tuple[list[str], TypingHead, dict[str, ScorerState], dict[str, Calibration]]:
    """Train one network and fit every method in ``methods`` on it (the shared-network core).

    Args:
        features: (N, V, D) training-view features (view 0 = image as is) or (N, D).
        labels: N defect-type names.
        config: typer settings (head, operating point, folds, seed; ``config.method`` is ignored).
        methods: method configs to fit; keys of the returned dicts are their ``method`` names.

    Returns:
        (class names, final head, state per method, calibration per method).
    """
    views = _as_views(features)
    if len(views) != len(labels):
        raise ConfigError(f"{len(views)} feature rows but {len(labels)} labels")
    classes, y = _encode(labels)
    if len(classes) < 2:
        raise ConfigError("typing needs at least two defect types to train a classifier")
    counts = np.bincount(y, minlength=len(classes))
    if counts.min() < 2:
        rare = [c for c, k in zip(classes, counts, strict=True) if k < 2]
        raise ConfigError(f"every defect type needs at least 2 images; too few for {rare}")
    from sklearn.model_selection import StratifiedKFold

    n_folds = int(min(config.calibration_folds, counts.min()))
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=config.seed)
    oof = {m.method: np.zeros(len(y)) for m in methods}
    oof_pred = {m.method: np.zeros(len(y), dtype=np.int64) for m in methods}
    v, d = views.shape[1:]
    for j, (tr, va) in enumerate(splitter.split(np.zeros(len(y)), y)):
        head = _fit_on(views[tr], y[tr], len(classes), config, config.seed + 1 + j)
        train_out = head_outputs(head, views[tr].reshape(-1, d))
        val_out = head_outputs(head, views[va, 0])
        for m in methods:
            state = fit_state(m, train_out, np.repeat(y[tr], v), len(classes))
            s = score(state, val_out)
            oof[m.method][va] = s.unknown
            oof_pred[m.method][va] = s.predicted
        progress("calibration", j + 1, n_folds)
    head = _fit_on(views, y, len(classes), config, config.seed)
    all_out = head_outputs(head, views.reshape(-1, d))
    states: dict[str, ScorerState] = {}
    calib: dict[str, Calibration] = {}
    for m in methods:
        states[m.method] = fit_state(m, all_out, np.repeat(y, v), len(classes))
        calib[m.method] = Calibration(
            threshold=operating_threshold(oof[m.method], config.known_accept_rate),
            known_scores=oof[m.method],
            accuracy=float((oof_pred[m.method] == y).mean()),
            folds=n_folds,
            target=config.known_accept_rate,
        )
        logger.info(
            "typing %s: out-of-fold accuracy %.3f, threshold %.4g (known accept %.2f)",
            m.method,
            calib[m.method].accuracy,
            calib[m.method].threshold,
            config.known_accept_rate,
        )
    return classes, head, states, calib


class OpenSetTyper:
    """Open-set defect-type classifier over whole defect images.

    Args:
        config: settings; ``config.method`` selects the unknown-scoring method.
        extractor: frozen feature extractor to use (built from ``config.features`` when None);
            inject one to share it between typers.

    Example::

        typer = OpenSetTyper(TyperConfig(method=MahalanobisConfig())).fit(images, labels)
        for r in typer.predict(new_images):
            print(r.label, r.confidence, r.is_unknown)
    """

    def __init__(
        self, config: TyperConfig | None = None, extractor: FeatureExtractor | None = None
    ) -> None:
        self.config = config or TyperConfig()
        self._extractor = extractor
        self.classes: list[str] = []
        self.head: TypingHead | None = None
        self.state: ScorerState | None = None
        self.calibration: Calibration | None = None
        self.threshold: float = float("inf")

    # ------------------------------------------------------------------ parts
    @property
    def extractor(self) -> FeatureExtractor:
        if self._extractor is None:
            self._extractor = FeatureExtractor(self.config.features)
        return self._extractor

    @property
    def method(self) -> str:
        return self.config.method.method

    def _require_fitted(self) -> tuple[TypingHead, ScorerState]:
        if self.head is None or self.state is None:
            raise NotFittedError("OpenSetTyper used before fit() or load()")
        return self.head, self.state

    # ------------------------------------------------------------------ training
    def fit(
        self, images: np.ndarray, labels: Sequence[str], progress: ProgressFn = no_progress
    ) -> OpenSetTyper:
        """Train on (N, H, W, 3) uint8 RGB defect images with N defect-type names."""
        feats = self.extractor.extract_views(images, seed=self.config.seed, progress=progress)
        return self.fit_features(feats, labels, progress)

    def fit_features(
        self, features: np.ndarray, labels: Sequence[str], progress: ProgressFn = no_progress
    ) -> OpenSetTyper:
        """Train on precomputed (N, V, D) view features (view 0 = as is) or (N, D) features."""
        classes, head, states, calib = fit_shared(
            features, labels, self.config, [self.config.method], progress
        )
        self._set(classes, head, states[self.method], calib[self.method])
        return self

    def _set(
        self, classes: list[str], head: TypingHead, state: ScorerState, calib: Calibration
    ) -> None:
        self.classes = list(classes)
        self.head = head
        self.state = state
        self.calibration = calib
        self.threshold = calib.threshold

    def add_class(self, name: str, images: np.ndarray) -> OpenSetTyper:
        """Add defect type ``name`` from its (N, H, W, 3) images at once, without retraining.

        Only for class-mean methods (``mahalanobis``, ``metric``); the threshold is kept.
        """
        feats = self.extractor.extract_views(images, seed=self.config.seed)
        return self.add_class_features(name, feats)

    def add_class_features(self, name: str, features: np.ndarray) -> OpenSetTyper:
        """:meth:`add_class` from precomputed (N, V, D) or (N, D) features."""
        head, state = self._require_fitted()
        if name in self.classes:
            raise ConfigError(f"defect type {name!r} is already known")
        views = _as_views(features)
        out = head_outputs(head, views.reshape(-1, views.shape[-1]))
        self.state = add_class_state(state, out)
        self.classes.append(name)
        logger.info("typing: added class %r from %d images", name, len(views))
        return self

    # ------------------------------------------------------------------ inference
    def outputs(self, features: np.ndarray) -> NetworkOutputs:
        """Network outputs for (N, D) features."""
        head, _ = self._require_fitted()
        return head_outputs(head, features)

    def scores_features(self, features: np.ndarray) -> MethodScores:
        """Method scores for (N, D) features of images as they are."""
        _, state = self._require_fitted()
        return score(state, self.outputs(features))

    def predict_features(self, features: np.ndarray) -> list[TypingResult]:
        return results(self.scores_features(features), self.classes, self.threshold)

    def scores(self, images: np.ndarray) -> MethodScores:
        """Method scores for (N, H, W, 3) uint8 RGB images."""
        return self.scores_features(self.extractor.extract(images))

    def predict(self, images: np.ndarray) -> list[TypingResult]:
        """One :class:`TypingResult` per (N, H, W, 3) uint8 RGB image."""
        return results(self.scores(images), self.classes, self.threshold)

    # ------------------------------------------------------------------ persistence
    def _meta(self, fmt: str) -> dict[str, Any]:
        head, _ = self._require_fitted()
        return {
            "format": fmt,
            "method": self.method,
            "classes": self.classes,
            "threshold": self.threshold,
            "head_classes": int(head.classifier.out_features),
            "in_dim": int(head.feat_mean.numel()),
            "image_size": self.config.features.image_size,
            "calibration": self.calibration.summary() if self.calibration else None,
            "config": self.config.model_dump(mode="json"),
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``typer.json`` (config, classes, threshold), ``head.pt``, ``scorer.npz/json``.

        The frozen backbone is not copied: it is rebuilt from the offline ImageNet weights.
        """
        head, state = self._require_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(head.state_dict(), directory / "head.pt")
        state.save(directory / "scorer")
        self._save_calibration(directory)
        (directory / "typer.json").write_text(json.dumps(self._meta(SAVE_FORMAT), indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path, extractor: FeatureExtractor | None = None) -> OpenSetTyper:
        directory = Path(directory)
        try:
            meta = json.loads((directory / "typer.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelFileError(f"cannot read typer {directory}: {exc}") from exc
        if meta.get("format") != SAVE_FORMAT:
            raise ModelFileError(f"{directory} is not an {SAVE_FORMAT} typer")
        config = TyperConfig.model_validate(meta["config"])
        typer = cls(config, extractor)
        head = TypingHead(int(meta["in_dim"]), int(meta["head_classes"]), config.head)
        try:
            head.load_state_dict(torch.load(directory / "head.pt", weights_only=True))
        except (OSError, RuntimeError) as exc:
            raise ModelFileError(f"cannot load head weights from {directory}: {exc}") from exc
        head.eval()
        typer.head = head
        typer.state = ScorerState.load(directory / "scorer")
        typer.classes = list(meta["classes"])
        typer.threshold = float(meta["threshold"])
        typer.calibration = _load_calibration(directory, meta)
        return typer

    def _save_calibration(self, directory: Path) -> None:
        if self.calibration is not None:
            np.savez(directory / CALIBRATION_FILE, known_scores=self.calibration.known_scores)

    def export(self, directory: str | Path) -> Path:
        """Station bundle: ``typer.xml/.bin`` (OpenVINO: raw RGB [0, 1] (N, 3, S, S) ->
        features, embedding, logits), ``scorer.npz/json`` and ``runtime.json``."""
        import openvino as ov

        from inspection.ov_export import to_openvino

        head, state = self._require_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        size = self.config.features.image_size
        net = TypingNetwork(self.extractor.module, head).eval()
        model = to_openvino(
            net, torch.zeros(1, 3, size, size), input=[ov.PartialShape([-1, 3, size, size])]
        )
        ov.save_model(model, directory / "typer.xml", compress_to_fp16=False)  # exact scores
        state.save(directory / "scorer")
        self._save_calibration(directory)
        meta = self._meta(RUNTIME_FORMAT)
        (directory / "runtime.json").write_text(json.dumps(meta, indent=2) + "\n")
        return directory


def _load_calibration(directory: Path, meta: dict[str, Any]) -> Calibration | None:
    """The stored operating point (None for typers saved before it was kept)."""
    summary = meta.get("calibration")
    path = directory / CALIBRATION_FILE
    if not summary or not path.is_file():
        return None
    try:
        with np.load(path) as data:
            known = np.asarray(data["known_scores"], dtype=np.float64)
    except (OSError, KeyError, ValueError) as exc:
        raise ModelFileError(f"cannot read typer calibration {path}: {exc}") from exc
    target = summary.get("known_accept_rate_target", meta["config"].get("quantile", 0.95))
    return Calibration(
        threshold=float(meta["threshold"]),
        known_scores=known,
        accuracy=float(summary.get("oof_accuracy", float("nan"))),
        folds=int(summary.get("folds", 0)),
        target=float(target),
    )


def fit_typers(
    features: np.ndarray,
    labels: Sequence[str],
    config: TyperConfig,
    methods: Sequence[MethodConfig],
    extractor: FeatureExtractor | None = None,
    progress: ProgressFn = no_progress,
) -> dict[str, OpenSetTyper]:
    """One typer per method, all sharing one trained network (for benchmarks and comparisons)."""
    classes, head, states, calib = fit_shared(features, labels, config, methods, progress)
    typers: dict[str, OpenSetTyper] = {}
    for m in methods:
        typer = OpenSetTyper(config.model_copy(update={"method": m}), extractor)
        typer._set(classes, head, states[m.method], calib[m.method])
        typers[m.method] = typer
    return typers
