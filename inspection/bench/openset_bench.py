"""``inspection bench openset``: the open-set typing protocols ``mt-open`` and ``neu-open``.

Protocols (``../shared/data/README.md``), both leave one defect type out:

* ``mt-open`` (magnetic tile, five folds): train on the four known classes' images of
  acquisition groups exp0..exp4, test on their exp5, exp6 images plus every image of the
  unknown class;
* ``neu-open`` (NEU steel strip, six folds): per known type a fixed 70/30 split by image
  number, test = the known types' 30 % plus every image of the unknown type.

Every method and setting is judged on both together, never tuned on one. Reported per fold and
averaged, for every
method on the **same trained network** per fold: closed-set accuracy on known test images,
AUROC of the unknown score, OSCR (Dhamija et al., NeurIPS 2018) and the accuracy of the
unknown-vs-known decision at the deployed threshold (set from training data only).

Input is the whole image (no crop: a test-time crop would need a detector's anomaly map, and
ground-truth test masks are never used). The frozen backbone's features of every image are
computed once and shared by the folds: the backbone is ImageNet-pretrained and never sees a
fold's labels, so this changes speed, not numbers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inspection.bench.figures import pyplot, save_figure
from inspection.bench.report import RESULTS_DIR, markdown_table, stamp, write_results
from inspection.errors import ConfigError
from inspection.openset.config import METHODS, TyperConfig, method_config
from inspection.openset.features import FeatureExtractor, ProgressFn, no_progress

logger = logging.getLogger(__name__)

PROTOCOL = "mt-open"
PROTOCOLS: tuple[str, ...] = ("mt-open", "neu-open")
#: First lines of each protocol's markdown report (data set and its citation).
DESCRIPTIONS: dict[str, str] = {
    "mt-open": "Open-set defect typing on magnetic tile, protocol `mt-open` (leave one defect class\n"
    "out, five folds; Huang, Qiu, Yuan, The Visual Computer 36, 2020). Mean over folds.",
    "neu-open": "Open-set defect typing on NEU hot-rolled steel strip, protocol `neu-open` (leave one\n"
    "type out, six folds; Song & Yan, Applied Surface Science 285, 2013; He, Song, Meng, Yan,\n"
    "IEEE Trans. Instrum. Meas. 69, 2020). Mean over folds.",
}
METRICS = ("closed_set_accuracy", "unknown_auroc", "oscr", "unknown_accuracy")
EXTRA = ("known_accept_rate", "unknown_reject_rate")
COLUMNS = ("method", *METRICS, *EXTRA)
INPUT_NOTE = (
    "whole image resized to {size}x{size} (no crop; test masks unused), frozen ImageNet "
    "EfficientNet-Lite0 features ({levels}, {pooling} pooled), two-head MLP trained per fold"
)


def _cache_key(config: TyperConfig, ids: Sequence[str]) -> str:
    blob = json.dumps([config.features.model_dump(mode="json"), config.seed, list(ids)])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def view_features(
    extractor: FeatureExtractor,
    images: np.ndarray,
    ids: Sequence[str],
    config: TyperConfig,
    cache_dir: Path | None,
    progress: ProgressFn = no_progress,
) -> np.ndarray:
    """(N, V, D) training-view features of ``images``, cached on disk under ``cache_dir``."""
    path = cache_dir / f"features-{_cache_key(config, ids)}.npy" if cache_dir else None
    if path is not None and path.is_file():
        logger.info("features from cache %s", path)
        return np.load(path)
    feats = extractor.extract_views(images, seed=config.seed, progress=progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, feats)
    return feats


def evaluate_fold(
    typers: dict[str, Any], test_feats: np.ndarray, test_types: Sequence[str], unknown: str
) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """Protocol numbers per method for one fold, and the raw unknown scores for figures."""
    from inspection.openset.metrics import openset_report

    truth = np.array(test_types)
    is_unknown = truth == unknown
    per_method: dict[str, dict[str, Any]] = {}
    raw: dict[str, np.ndarray] = {}
    for key, typer in typers.items():
        s = typer.scores_features(test_feats)
        pred = np.array(typer.classes)[s.predicted]
        rep = openset_report(is_unknown, pred == truth, s.unknown, typer.threshold)
        rep["oof_accuracy"] = typer.calibration.accuracy if typer.calibration else None
        per_method[key] = rep
        raw[key] = s.unknown
    return per_method, raw


def load_folds(protocol: str, data: Path, size: int) -> list[Any]:
    """The folds (:class:`~inspection.data.magnetic_tile.OpenSetFold`) of ``protocol``."""
    if protocol == "mt-open":
        from inspection.data.magnetic_tile import mt_open

        return list(mt_open(data, size=size))
    if protocol == "neu-open":
        from inspection.data.neu_surface import neu_open

        return neu_open(data, size=size)
    raise ConfigError(f"unknown open-set protocol {protocol!r}; expected one of {PROTOCOLS}")


def run(
    data: Path,
    config: TyperConfig | None = None,
    methods: Sequence[str] = METHODS,
    results_dir: Path = RESULTS_DIR,
    cache_dir: Path | None = Path("runs/typing-cache"),
    progress: ProgressFn = no_progress,
    protocol: str = PROTOCOL,
) -> dict[str, Any]:
    """Run ``protocol`` for ``methods``; write ``<results_dir>/<protocol>.json/.md`` + figures."""
    from inspection.openset.classifier import fit_typers

    config = config or TyperConfig()
    unknown_methods = set(methods) - set(METHODS)
    if unknown_methods:
        raise ConfigError(f"unknown methods {sorted(unknown_methods)}; expected {METHODS}")
    started = time.perf_counter()
    load_before = os.getloadavg()
    folds = load_folds(protocol, data, config.features.image_size)
    images: dict[str, np.ndarray] = {}
    for fold in folds:
        for s in (fold.train, fold.test):
            images.update(zip(s.ids, s.images, strict=True))
    ids = sorted(images)
    logger.info("%s: %d images, %d folds", protocol, len(ids), len(folds))
    extractor = FeatureExtractor(config.features)
    t0 = time.perf_counter()
    feats = view_features(
        extractor, np.stack([images[i] for i in ids]), ids, config, cache_dir, progress
    )
    feature_seconds = time.perf_counter() - t0
    row = {i: k for k, i in enumerate(ids)}
    method_cfgs = [method_config(m) for m in methods]
    fold_reports: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    fold_scores: list[tuple[str, np.ndarray, dict[str, np.ndarray], dict[str, float]]] = []
    for k, fold in enumerate(folds):
        t_fold = time.perf_counter()
        tr = [row[i] for i in fold.train.ids]
        te = [row[i] for i in fold.test.ids]
        typers = fit_typers(feats[tr], fold.train.defect_types, config, method_cfgs, extractor)
        reports, raw = evaluate_fold(typers, feats[te, 0], fold.test.defect_types, fold.unknown)
        for m in methods:
            fold_reports[m].append({"unknown": fold.unknown, "n_train": len(tr), **reports[m]})
        truth_unknown = np.array(fold.test.defect_types) == fold.unknown
        fold_scores.append(
            (fold.unknown, truth_unknown, raw, {m: typers[m].threshold for m in methods})
        )
        logger.info(
            "fold %d/%d (unknown %s, %.0f s): %s",
            k + 1,
            len(folds),
            fold.unknown,
            time.perf_counter() - t_fold,
            ", ".join(f"{m} auroc {reports[m]['unknown_auroc']:.3f}" for m in methods),
        )
        progress("folds", k + 1, len(folds))
    summary: dict[str, Any] = {}
    for m in methods:
        reps = fold_reports[m]
        summary[m] = {key: float(np.mean([r[key] for r in reps])) for key in (*METRICS, *EXTRA)}
        summary[m]["folds"] = reps
    payload: dict[str, Any] = {
        "protocol": protocol,
        **stamp(),
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "input": INPUT_NOTE.format(
            size=config.features.image_size,
            levels="+".join(config.features.levels),
            pooling=config.features.pooling,
        ),
        "threshold_rule": (
            f"operating point known_accept_rate {config.known_accept_rate:.2f}: that quantile "
            f"of out-of-fold unknown scores of the training images "
            f"({config.calibration_folds}-fold cross-fitting); test data never used"
        ),
        "config": config.model_dump(mode="json", exclude={"method"}),
        "seconds": {
            "features": round(feature_seconds, 1),
            "total": round(time.perf_counter() - started, 1),
        },
        "methods": summary,
    }
    figure_dir = results_dir / protocol
    best = max(methods, key=lambda m: summary[m]["unknown_auroc"])
    figures = [
        str(roc_figure(figure_dir / "roc.png", fold_scores, methods)),
        str(histogram_figure(figure_dir / f"hist-{best}.png", fold_scores, best)),
    ]
    payload["figures"] = figures
    markdown = _markdown(payload, methods, figures, results_dir)
    write_results(protocol, payload, markdown, results_dir)
    return payload


def _markdown(
    payload: dict[str, Any], methods: Sequence[str], figures: Sequence[str], results_dir: Path
) -> str:
    summary = payload["methods"]
    rows = [{"method": m, **summary[m]} for m in methods]
    fold_names = [f["unknown"] for f in summary[methods[0]]["folds"]]
    per_fold = []
    for metric in ("unknown_auroc", "closed_set_accuracy", "oscr"):
        for m in methods:
            r: dict[str, Any] = {"metric": metric, "method": m}
            r.update({u: f[metric] for u, f in zip(fold_names, summary[m]["folds"], strict=True)})
            per_fold.append(r)
    lines = [
        DESCRIPTIONS[payload["protocol"]],
        "",
        f"Input: {payload['input']}.",
        f"Threshold: {payload['threshold_rule']}.",
        "",
        markdown_table(rows, COLUMNS),
        "",
        "Per fold (column = the unknown class):",
        "",
        markdown_table(per_fold, ["metric", "method", *fold_names]),
        "",
        f"Time: {payload['seconds']}; load average {payload['load_average']}.",
        "",
        *[
            f"![{Path(f).stem}]({Path(f).relative_to(results_dir).as_posix()})"
            for f in figures
            if Path(f).is_relative_to(results_dir)
        ],
    ]
    return "\n".join(lines)


def roc_figure(
    path: Path,
    fold_scores: Sequence[tuple[str, np.ndarray, dict[str, np.ndarray], dict[str, float]]],
    methods: Sequence[str],
) -> Path:
    """One small PNG: unknown-vs-known ROC of every method, one panel per fold."""
    from sklearn.metrics import roc_curve

    plt = pyplot()
    fig, axes = plt.subplots(1, len(fold_scores), figsize=(3 * len(fold_scores), 3.2), dpi=70)
    for ax, (unknown, truth, raw, _) in zip(np.atleast_1d(axes), fold_scores, strict=True):
        for m in methods:
            fpr, tpr, _ = roc_curve(truth, raw[m])
            ax.plot(fpr, tpr, lw=1, label=m)
        ax.plot([0, 1], [0, 1], "k:", lw=0.6)
        ax.set(title=f"unknown = {unknown}", xlabel="FPR (known flagged)")
    np.atleast_1d(axes)[0].set_ylabel("TPR (unknown flagged)")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    return save_figure(fig, path)


def histogram_figure(
    path: Path,
    fold_scores: Sequence[tuple[str, np.ndarray, dict[str, np.ndarray], dict[str, float]]],
    method: str,
) -> Path:
    """One small PNG: known vs unknown score histograms of ``method`` per fold, threshold dashed."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(fold_scores), figsize=(3 * len(fold_scores), 3.0), dpi=70)
    for ax, (unknown, truth, raw, thresholds) in zip(np.atleast_1d(axes), fold_scores, strict=True):
        s = raw[method]
        bins = np.linspace(float(s.min()), float(s.max()), 30)
        ax.hist(s[~truth], bins=bins, alpha=0.6, label="known")
        ax.hist(s[truth], bins=bins, alpha=0.6, label="unknown")
        ax.axvline(thresholds[method], color="k", ls="--", lw=1)
        ax.set(title=f"unknown = {unknown}", xlabel=f"{method} score")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    return save_figure(fig, path)
