"""Pictures for bench reports: ROC and PRO curves, score histograms, heatmap overlays."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
    plt = _pyplot()
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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def overlay_grid(
    path: Path,
    images: np.ndarray,
    maps: np.ndarray,
    masks: np.ndarray,
    captions: list[str],
    vmin: float,
    vmax: float,
) -> Path:
    """Rows of (image with mask outline, heatmap overlay) pairs, one per example."""
    tiles = []
    for image, amap, mask in zip(images, maps, masks, strict=True):
        outlined = image.copy()
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(outlined, contours, -1, (0, 255, 0), 1)
        tiles.append(np.concatenate([outlined, overlay(image, amap, vmin, vmax)], axis=1))
    plt = _pyplot()
    cols = 2
    rows = (len(tiles) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(8, 2.2 * rows), dpi=80, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, tile, caption in zip(axes.flat, tiles, captions, strict=False):
        ax.imshow(tile)
        ax.set_title(caption, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
