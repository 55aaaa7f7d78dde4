"""Station-side defect typing: OpenVINO graph + NumPy scorer, no torch.

A bundle written by :meth:`inspection.openset.classifier.OpenSetTyper.export` holds

* ``typer.xml`` / ``typer.bin``: raw RGB in [0, 1], (N, 3, S, S) float32 -> pooled backbone
  features (N, D), metric embedding (N, E), logits (N, C); normalisation is inside the graph;
* ``scorer.npz`` / ``scorer.json``: the selected method's statistics (class means, low-rank
  precision, Weibull parameters, ...), evaluated by :mod:`inspection.openset.scoring`;
* ``runtime.json``: method, class names, unknown threshold, input size, config and the
  operating point it was set at (``calibration``: target known-accept rate, out-of-fold rates);
* ``calibration.npz``: out-of-fold unknown scores of the known training defects, so a station
  may choose another operating point (``known_accept_rate``) without retraining.

This module imports no torch: only NumPy, OpenCV and OpenVINO.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inspection.errors import ConfigError, ModelFileError
from inspection.openset.scoring import (
    MethodScores,
    NetworkOutputs,
    ScorerState,
    TypingResult,
    operating_threshold,
    results,
    score,
)
from inspection.runtime import read_bundle_json

logger = logging.getLogger(__name__)

RUNTIME_FORMAT = "inspection-typing-runtime/1"
#: Out-of-fold known scores beside a saved or exported typer, so an operating point can move.
CALIBRATION_FILE = "calibration.npz"


def read_known_scores(directory: str | Path) -> np.ndarray | None:
    """(N,) out-of-fold known scores stored with a bundle; None when the bundle has none."""
    path = Path(directory) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            return np.asarray(data["known_scores"], dtype=np.float64)
    except (OSError, KeyError, ValueError) as exc:
        raise ModelFileError(f"cannot read typing calibration {path}: {exc}") from exc


def operating_point(
    meta: dict[str, Any], known_scores: np.ndarray | None, known_accept_rate: float | None = None
) -> dict[str, Any]:
    """The operating point of a bundle, or of ``known_accept_rate`` when one is asked for.

    Returns ``known_accept_rate_target``, ``threshold``, ``known_accept_rate_oof`` (share of the
    training defects' out-of-fold scores at or below the threshold: what a plant should see on
    known types), ``oof_accuracy``, ``n_train`` and ``source`` (``bundle`` or ``station``).

    Raises:
        ConfigError: a rate is asked for but the bundle stores no out-of-fold scores.
    """
    summary = dict(meta.get("calibration") or {})
    target = summary.get(
        "known_accept_rate_target", (meta.get("config") or {}).get("quantile", float("nan"))
    )
    point: dict[str, Any] = {
        "known_accept_rate_target": target,
        "threshold": float(meta["threshold"]),
        "known_accept_rate_oof": summary.get("known_accept_rate_oof"),
        "oof_accuracy": summary.get("oof_accuracy"),
        "n_train": summary.get("n_train"),
        "source": "bundle",
    }
    if known_accept_rate is None:
        return point
    if known_scores is None:
        raise ConfigError(
            "this typing bundle stores no out-of-fold scores (calibration.npz); it can only run "
            "at the operating point it was trained for"
        )
    threshold = operating_threshold(known_scores, known_accept_rate)
    point.update(
        known_accept_rate_target=float(known_accept_rate),
        threshold=threshold,
        known_accept_rate_oof=float((known_scores <= threshold).mean()),
        n_train=int(known_scores.size),
        source="station",
    )
    return point


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
    return read_bundle_json(Path(directory) / "runtime.json", RUNTIME_FORMAT, "typing bundle")


class TypingRuntime:
    """Runs an exported typing bundle on CPU (or another OpenVINO device).

    Args:
        directory: bundle folder written by ``OpenSetTyper.export``.
        device: OpenVINO device name.
        batch_size: images per inference request.
        known_accept_rate: operating point of this station (share of known-type defects that
            keep their type); None keeps the bundle's. The threshold comes from the bundle's
            out-of-fold training scores, never from the station's own images.
    """

    def __init__(
        self,
        directory: str | Path,
        device: str = "CPU",
        batch_size: int = 16,
        known_accept_rate: float | None = None,
    ) -> None:
        import openvino as ov

        directory = Path(directory)
        self.meta = read_runtime_metadata(directory)
        self.classes: list[str] = list(self.meta["classes"])
        self.operating_point = operating_point(
            self.meta, read_known_scores(directory), known_accept_rate
        )
        self.threshold = float(self.operating_point["threshold"])
        if known_accept_rate is not None:
            logger.info(
                "typing bundle %s: known-accept %.3f -> threshold %.4g (bundle %.4g)",
                directory,
                known_accept_rate,
                self.threshold,
                float(self.meta["threshold"]),
            )
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
        # One infer request per calling thread: the station's scoring threads share this
        # runtime, and a compiled model's own call runs every caller through one request
        # ("Infer Request is busy" when two frames are typed at once).
        self._requests = threading.local()

    def outputs(self, images: np.ndarray) -> NetworkOutputs:
        """Network outputs for (N, H, W, 3) uint8 RGB images (resized to the input size)."""
        images = resize_images(images, self.image_size)
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self._compiled.create_infer_request()
        parts = []
        for start in range(0, len(images), self.batch_size):
            res = request.infer(to_nchw(images[start : start + self.batch_size]))
            parts.append(NetworkOutputs(*(np.asarray(res[i]) for i in range(3))))
        return NetworkOutputs.concat(parts)

    def scores(self, images: np.ndarray) -> MethodScores:
        """Method scores (predicted class index, confidence, unknown score) per image."""
        return score(self.state, self.outputs(images))

    def predict(self, images: np.ndarray) -> list[TypingResult]:
        """One :class:`~inspection.openset.scoring.TypingResult` per image."""
        return results(self.scores(images), self.classes, self.threshold)
