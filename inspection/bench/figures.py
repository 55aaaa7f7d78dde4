"""Pictures for bench reports: ROC and PRO curves, score histograms, heatmap overlays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:
    from inspection.data.imageset import ImageSet
    from inspection.evaluation import Calibration
    from inspection.geometry import Box


def pyplot():  # type: ignore[no-untyped-def]
    """``matplotlib.pyplot`` on the file-only Agg backend (benchmarks draw no windows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out ``fig``, write it to ``path`` (folders created) and free it; returns ``path``."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    pyplot().close(fig)
    return path


def overlay(
    image: np.ndarray, amap: np.ndarray, vmin: float, vmax: float, alpha: float = 0.45
) -> np.ndarray:
    """Heatmap (H, W) blended over an RGB image (H, W, 3) uint8; returns RGB uint8."""
    norm = np.clip((amap - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    heat = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    return cv2.addWeighted(image, 1 - alpha, heat, alpha, 0)


def detector_report(
    path: Path,
    title: str,
    roc: tuple[np.ndarray, np.ndarray],
    pro: tuple[np.ndarray, np.ndarray] | None,
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: float,
) -> Path:
    """One PNG: image ROC, PRO curve (FPR <= 0.3) and score histogram with the threshold."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), dpi=80)
    axes[0].plot(*roc)
    axes[0].plot([0, 1], [0, 1], "k:", lw=0.8)
    axes[0].set(title="image ROC", xlabel="FPR", ylabel="TPR")
    if pro is not None:
        axes[1].plot(*pro)
        axes[1].set(
            title="PRO curve", xlabel="FPR (pixels)", ylabel="PRO", xlim=(0, 0.3), ylim=(0, 1)
        )
    else:
        axes[1].set_axis_off()
    bins = np.linspace(float(scores.min()), float(scores.max()), 40)
    axes[2].hist(scores[labels == 0], bins=bins, alpha=0.6, label="normal")
    axes[2].hist(scores[labels == 1], bins=bins, alpha=0.6, label="defective")
    axes[2].axvline(threshold, color="k", ls="--", label="threshold")
    axes[2].set(title="image scores", xlabel="raw score")
    axes[2].legend(fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)


def overlay_grid(
    path: Path,
    images: np.ndarray,
    maps: np.ndarray,
    masks: np.ndarray,
    captions: list[str],
    vmin: float,
    vmax: float,
    boxes: Sequence[Box] | None = None,
) -> Path:
    """Rows of (image with mask outline, heatmap overlay) pairs, one per example.

    ``boxes``: each example's valid region ``(x, y, w, h)`` (letterboxed images); only that
    part of image, map and mask is drawn (None: all of it).
    """
    tiles = []
    for k, (image, amap, mask) in enumerate(zip(images, maps, masks, strict=True)):
        if boxes is not None:
            x, y, w, h = boxes[k]
            image, amap, mask = (
                np.ascontiguousarray(a[y : y + h, x : x + w]) for a in (image, amap, mask)
            )
        outlined = image.copy()
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(outlined, contours, -1, (0, 255, 0), 1)
        tiles.append(np.concatenate([outlined, overlay(image, amap, vmin, vmax)], axis=1))
    plt = pyplot()
    cols = 2
    rows = (len(tiles) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(8, 2.2 * rows), dpi=80, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, tile, caption in zip(axes.flat, tiles, captions, strict=False):
        ax.imshow(tile)
        ax.set_title(caption, fontsize=8)
    return save_figure(fig, path)


def evaluation_figures(
    folder: Path,
    name: str,
    title: str,
    scores: np.ndarray,
    maps: np.ndarray,
    test: ImageSet,
    calibration: Calibration,
) -> list[Path]:
    """``<name>_curves.png`` (ROC, PRO, histogram) and ``<name>_overlays.png`` (one per type).

    ``scores`` (N,) raw image scores, ``maps`` (N, 1, H, W) raw maps of ``test``'s images.
    """
    from inspection import evaluation

    maps = maps[:, 0]
    masks = test.masks
    cmp_maps, cmp_masks = evaluation.comparison_pixels(maps, test)  # valid boxes only if padded
    pro = evaluation.pro_curve(cmp_maps, cmp_masks) if cmp_masks.any() else None
    curves = detector_report(
        folder / f"{name}_curves.png",
        title,
        evaluation.roc_curve(scores, test.labels),
        pro,
        scores,
        test.labels,
        calibration.image_threshold,
    )
    types = np.array(test.defect_types)
    picks = [int(np.flatnonzero(types == t)[0]) for t in sorted(set(types))][:8]
    overlays = overlay_grid(
        folder / f"{name}_overlays.png",
        test.images[picks],
        maps[picks],
        masks[picks],
        [
            f"{types[i]}: score {scores[i]:.3g} (thr {calibration.image_threshold:.3g})"
            for i in picks
        ],
        vmin=calibration.map_min,
        vmax=float(np.quantile(cmp_maps, 0.999)),
        boxes=[test.box(i) for i in picks] if test.fit == "pad" else None,
    )
    return [curves, overlays]


def value_heatmap(
    path: Path,
    values: np.ndarray,
    row_labels: list[str],
    col_labels: list[str],
    title: str,
    vmin: float = 0.5,
    vmax: float = 1.0,
    cell_text: list[list[str]] | None = None,
) -> Path:
    """A table of numbers as an annotated heatmap (e.g. image AUROC, detectors x data sets).

    ``values`` (R, C) float, NaN where a cell was not measured (drawn grey, marked ``-``).
    ``cell_text`` (R x C strings) replaces the printed value of a cell where not empty. The
    colour scale spans ``vmin`` (or the lowest value, if lower) to ``vmax``.
    """
    plt = pyplot()
    rows, cols = values.shape
    fig, ax = plt.subplots(
        figsize=(1.6 + 1.3 * max(cols, 1), 0.8 + 0.42 * max(rows, 1)), dpi=90, squeeze=True
    )
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("#dddddd")
    lo = min(vmin, float(np.nanmin(values))) if np.isfinite(values).any() else vmin
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=lo, vmax=vmax, aspect="auto")
    for r in range(rows):
        for c in range(cols):
            v = values[r, c]
            text = "-" if not np.isfinite(v) else f"{v:.3f}"
            if cell_text is not None and cell_text[r][c]:
                text = cell_text[r][c]
            dark = np.isfinite(v) and (v - lo) / max(vmax - lo, 1e-12) <= 0.6
            ax.text(c, r, text, ha="center", va="center", fontsize=8, color="w" if dark else "k")
    ax.set_xticks(range(cols), col_labels, fontsize=9)
    ax.set_yticks(range(rows), row_labels, fontsize=9)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return save_figure(fig, path)
