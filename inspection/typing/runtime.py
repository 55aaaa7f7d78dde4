"""Station-side defect typing: OpenVINO graph + NumPy scorer, no torch.

A bundle written by :meth:`inspection.typing.classifier.OpenSetTyper.export` holds

* ``typer.xml`` / ``typer.bin``: raw RGB in [0, 1], (N, 3, S, S) float32 -> pooled backbone
  features (N, D), metric embedding (N, E), logits (N, C); normalisation is inside the graph;
* ``scorer.npz`` / ``scorer.json``: the selected method's statistics (class means, low-rank
  precision, Weibull parameters, ...), evaluated by :mod:`inspection.typing.scoring`;
* ``runtime.json``: method, class names, unknown threshold, input size, config.

This module imports no torch: only NumPy, OpenCV and OpenVINO.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inspection.errors import ModelFileError
from inspection.typing.scoring import (
    MethodScores,
    NetworkOutputs,
    ScorerState,
    TypingResult,
    results,
    score,
)

logger = logging.getLogger(__name__)

RUNTIME_FORMAT = "inspection-typing-runtime/1"


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3) or (N, H, W) uint8 -> (N, size, size, 3) uint8 RGB (gray replicated)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    if images.shape[1:3] == (size, size):
        return images.astype(np.uint8, copy=False)
    return np.stack(
        [cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in images]
    ).astype(np.uint8)


def to_nchw(images: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) uint8 -> (N, 3, S, S) float32 in [0, 1]."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def read_runtime_metadata(directory: str | Path) -> dict[str, Any]:
    """``runtime.json`` of a typing bundle, validated for format."""
    path = Path(directory) / "runtime.json"
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"cannot read typing bundle metadata {path}: {exc}") from exc
    if meta.get("format") != RUNTIME_FORMAT:
        raise ModelFileError(f"{path} is not an {RUNTIME_FORMAT} bundle")
    return meta


class TypingRuntime:
    """Runs an exported typing bundle on CPU (or another OpenVINO device).

    Args:
        directory: bundle folder written by ``OpenSetTyper.export``.
        device: OpenVINO device name.
        batch_size: images per inference request.
    """

    def __init__(self, directory: str | Path, device: str = "CPU", batch_size: int = 16) -> None:
        import openvino as ov

        directory = Path(directory)
        self.meta = read_runtime_metadata(directory)
        self.classes: list[str] = list(self.meta["classes"])
        self.threshold = float(self.meta["threshold"])
        self.image_size = int(self.meta["image_size"])
        self.method = str(self.meta["method"])
        self.batch_size = batch_size
        self.state = ScorerState.load(directory / "scorer")
        xml = directory / "typer.xml"
        if not xml.is_file():
            raise ModelFileError(f"typing graph missing: {xml}")
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "f32"} if device == "CPU" else {}
        self._compiled = core.compile_model(core.read_model(xml), device, config)

    def outputs(self, images: np.ndarray) -> NetworkOutputs:
        """Network outputs for (N, H, W, 3) uint8 RGB images (resized to the input size)."""
        images = resize_images(images, self.image_size)
        parts = []
        for start in range(0, len(images), self.batch_size):
            res = self._compiled(to_nchw(images[start : start + self.batch_size]))
            parts.append(NetworkOutputs(*(np.asarray(res[i]) for i in range(3))))
        return NetworkOutputs.concat(parts)

    def scores(self, images: np.ndarray) -> MethodScores:
        """Method scores (predicted class index, confidence, unknown score) per image."""
        return score(self.state, self.outputs(images))

    def predict(self, images: np.ndarray) -> list[TypingResult]:
        """One :class:`~inspection.typing.scoring.TypingResult` per image."""
        return results(self.scores(images), self.classes, self.threshold)
