"""``inspection bench loop``'s novel-type measurement (:mod:`inspection.bench.loop_bench`):
leave each labelled defect type out, refit the patch refiner and the open-set typer without it,
and measure how the candidate treats that type as if it were new.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from inspection.bench.loop_bench import Scored, Split
from inspection.data.imageset import GOOD, ImageSet
from inspection.detectors.base import ProgressFn


def _typer_features(
    candidate: Any,
    full: Any,
    d_maps: Any,
    e_maps: Any,
    candidate_bundle: Path,
    test: ImageSet,
    defects: list[int],
    split: Split,
    settings: Any,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The typer's inputs as the retrain makes them: crops re-cut with the full candidate's
    map; the training views of the labelled defects, the features of the evaluation defects
    and those defects' indices."""
    from inspection.data.imageset import read_image
    from inspection.loop.candidate import typer_config
    from inspection.loop.dataset import station_crop
    from inspection.loop.patch_refiner import refined_maps
    from inspection.openset.features import FeatureExtractor
    from inspection.openset.typer_runtime import resize_images

    size = candidate.config.image_size
    types = np.array(test.defect_types)
    full_maps = (
        refined_maps(candidate, full, d_maps, size)[1]
        if full is not None
        else np.zeros((len(defects), 1, size, size), np.float32)
    )
    cand_meta = json.loads((candidate_bundle / "model.json").read_text())
    pix = float(cand_meta["calibration"]["pixel_threshold"])
    train_crops = [
        station_crop(read_image(test.ids[i]), m, pix)
        for i, m in zip(defects, full_maps, strict=True)
    ]
    eval_def = [i for i in split.evaluation if types[i] != GOOD]
    eval_def_pos = [int(np.flatnonzero(split.evaluation == i)[0]) for i in eval_def]
    eval_maps_full = (
        refined_maps(candidate, full, e_maps.take(eval_def_pos), size)[1]
        if full is not None
        else np.zeros((len(eval_def), 1, size, size), np.float32)
    )
    eval_crops = [
        station_crop(read_image(test.ids[i]), m, pix)
        for i, m in zip(eval_def, eval_maps_full, strict=True)
    ]
    extractor = FeatureExtractor(typer_config(settings, 2).features)
    t_size = settings.typer.image_size
    train_views = extractor.extract_views(
        np.stack([resize_images(c[None], t_size)[0] for c in train_crops])
    )
    eval_feats = extractor.extract(
        np.stack([resize_images(c[None], t_size)[0] for c in eval_crops])
    )
    return train_views, eval_feats, eval_def


def _typer_without(
    kind: str,
    labels: list[str],
    train_views: np.ndarray,
    eval_feats: np.ndarray,
    eval_def_types: np.ndarray,
    settings: Any,
) -> dict[str, Any]:
    """The typer trained without ``kind``: how often it flags that type (and the known ones)
    unknown, and its unknown-score AUROC; empty when too few types remain."""
    from inspection.loop.candidate import typer_config
    from inspection.loop.gate import auroc
    from inspection.openset.classifier import OpenSetTyper

    t_cfg = settings.typer
    keep_t = [k for k, lab in enumerate(labels) if lab != kind]
    per_class = Counter(labels[k] for k in keep_t)
    classes = [c for c, n in per_class.items() if n >= t_cfg.min_per_type]
    if len(classes) < t_cfg.min_types:
        return {}
    use = [k for k in keep_t if labels[k] in classes]
    typer = OpenSetTyper(typer_config(settings, min(per_class[c] for c in classes)))
    typer.fit_features(train_views[use], [labels[k] for k in use])
    res = typer.predict_features(eval_feats)
    unknown = np.array([r.is_unknown for r in res])
    score = np.array([r.unknown_score for r in res])
    novel = eval_def_types == kind
    known = np.isin(eval_def_types, classes)
    return {
        "flagged_unknown": float(unknown[novel].mean()) if novel.any() else None,
        "known_flagged_unknown": float(unknown[known].mean()) if known.any() else None,
        "unknown_auroc": auroc(score[novel | known], novel[novel | known].astype(int)),
    }


def novel_types(
    candidate_bundle: Path,
    base_bundle: Path,
    test: ImageSet,
    train_normals: ImageSet,
    job: dict[str, Any],
    train_indices: list[int],
    split: Split,
    before: Scored,
    settings: Any,
    progress: ProgressFn,
) -> dict[str, Any]:
    """Leave-one-type-out: refit refiner and typer without each labelled type; measure it."""
    from inspection.loop.gate import fpr_at_recall
    from inspection.loop.patch_refiner import (
        PatchMaps,
        PatchRefinerParams,
        fit_patch_refiner,
        padim_maps,
        refined_maps,
    )
    from inspection.training import load_trained, split_validation

    candidate = load_trained(candidate_bundle).detector
    root = load_trained(base_bundle).detector
    size = candidate.config.image_size
    types = np.array(test.defect_types)
    defects = [i for i in train_indices if types[i] != GOOD]
    confirmed = [i for i in train_indices if types[i] == GOOD]
    _, val = split_validation(train_normals, 0.15, int(root.config.seed))
    held = set(job["metrics"]["holdout"]["base_normal_ids"])
    ref_idx = [k for k, ident in enumerate(val.ids) if ident not in held]
    progress("novel types: patch features", 0, 4)
    d_maps = padim_maps(candidate, test.images[defects])
    n_maps = PatchMaps.concat(
        [padim_maps(candidate, val.images[ref_idx])]
        + ([padim_maps(root, test.images[confirmed])] if confirmed else [])
    )
    e_maps = padim_maps(candidate, test.images[split.evaluation])
    progress("novel types: patch features", 4, 4)
    patch_file = candidate_bundle / "loop" / "patch_refiner.json"
    full = PatchRefinerParams.load(candidate_bundle / "loop") if patch_file.is_file() else None
    cfg = settings.refiner
    eval_types = types[split.evaluation]
    eval_normal = eval_types == GOOD
    counts = Counter(types[defects])
    per_type: dict[str, dict[str, Any]] = {}
    train_views, eval_feats, eval_def = _typer_features(
        candidate, full, d_maps, e_maps, candidate_bundle, test, defects, split, settings
    )
    eval_def_types = types[eval_def]
    for j, kind in enumerate(sorted(counts)):
        progress("novel types: leave one type out", j, len(counts))
        keep = np.array([types[i] != kind for i in defects])
        entry: dict[str, Any] = {"labelled": int(counts[kind])}
        positives = eval_types == kind
        mask = positives | eval_normal
        y = positives[mask].astype(int)
        entry["fpr_at_95_recall_before"] = fpr_at_recall(
            before.raw[split.evaluation][mask], y, 0.95
        )
        if full is not None and keep.sum() >= 2:
            params = fit_patch_refiner(
                d_maps.take(np.flatnonzero(keep)),
                n_maps,
                top_k=cfg.top_k,
                c=cfg.c,
                max_normal_patches=cfg.max_normal_patches,
            )
            scores, _ = refined_maps(candidate, params, e_maps, size)
            entry["fpr_at_95_recall_after"] = fpr_at_recall(scores[mask], y, 0.95)
        labels = [str(types[i]) for i in defects]
        entry |= _typer_without(kind, labels, train_views, eval_feats, eval_def_types, settings)
        per_type[str(kind)] = entry
    progress("novel types: leave one type out", len(counts), len(counts))

    def mean(key: str) -> float | None:
        vals = [e[key] for e in per_type.values() if e.get(key) is not None]
        return float(np.mean(vals)) if vals else None

    return {
        "per_type": per_type,
        "novel_type_fpr_at_95_recall_before": mean("fpr_at_95_recall_before"),
        "novel_type_fpr_at_95_recall_after": mean("fpr_at_95_recall_after"),
        "novel_flagged_unknown_after": mean("flagged_unknown"),
        "known_flagged_unknown_after": mean("known_flagged_unknown"),
        "unknown_auroc_after": mean("unknown_auroc"),
    }
