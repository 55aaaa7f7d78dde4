"""What the detector benchmarks share: measure one trained detector, run one job in a child.

:func:`measure_trained` scores a test set with a trained detector, computes the metrics
(optionally at another side than the detector's input: maps resized bilinearly to the masks'),
exports to OpenVINO and times batch-1 inference in torch and, in a fresh torch-free process
like a station's, in OpenVINO (:func:`time_openvino`).
:func:`run_in_child` runs one benchmark job in a spawned process, so its peak memory is its own
and a crash in one detector does not take the others down.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue as queue_module
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from inspection.data.imageset import ImageSet
    from inspection.detectors.base import ProgressFn
    from inspection.evaluation import Calibration
    from inspection.training import TrainedModel

logger = logging.getLogger(__name__)

#: Seconds between checks that a child is still alive while waiting for its result.
_CHILD_POLL_S = 5.0


def end_process(process: subprocess.Popen[Any], timeout_s: float) -> None:
    """Ask ``process`` to stop (SIGTERM); kill it when it has not ended within ``timeout_s``."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def time_per_image(fn: Callable[[np.ndarray], Any], images: np.ndarray, repeats: int) -> float:
    """Mean milliseconds of ``fn`` on one image (batch 1), after one warm-up call.

    ``images`` (N, S, S, 3) uint8 are cycled through ``repeats`` calls.
    """
    fn(images[:1])  # warm-up
    start = time.perf_counter()
    for i in range(repeats):
        fn(images[i % len(images) : i % len(images) + 1])
    return (time.perf_counter() - start) / repeats * 1000.0


def _time_bundle(bundle: str, images: np.ndarray, repeats: int) -> float:
    from inspection.runtime import OpenVinoModel

    return time_per_image(OpenVinoModel(bundle).predict, images, repeats)


#: File in a kept bundle folder holding the (N, S, S, 3) uint8 images it was timed on.
TIMING_IMAGES = "timing_images.npy"


def retime_bundle(bundle_dir: Path, repeats: int = 90) -> tuple[float, float]:
    """Time a bundle kept by :func:`measure_trained` again, on the images it was first timed
    on: ``(ms per image at batch 1, 1-minute load average right after)``."""
    images = np.load(bundle_dir / TIMING_IMAGES)
    ms = time_openvino(str(bundle_dir), images, repeats)
    return ms, round(os.getloadavg()[0], 2)


def time_openvino(bundle: str, images: np.ndarray, repeats: int) -> float:
    """Batch-1 milliseconds of the bundle's OpenVINO model in a spawned process that never
    imports torch, as on a station.

    Timed inside the benchmark's own process, after training, scoring and evaluating there,
    the same graph took several times longer (PaDiM on ``mvtec_screw``: 140 ms per 256 px
    image there, 31 ms in a fresh process, on this machine); the station's number is the
    fresh process's.
    """
    status, value = run_in_child(_time_bundle, (bundle, images, repeats))
    if status != "ok":
        raise RuntimeError(f"timing the OpenVINO bundle failed: {value}")
    return float(value)


def resize_maps(maps: np.ndarray, size: int, chunk: int = 64) -> np.ndarray:
    """Anomaly maps (N, 1, H, W) float -> (N, 1, size, size) float32, bilinear.

    Unchanged (same array) when already at ``size``; resized ``chunk`` maps at a time.
    """
    if maps.shape[-2:] == (size, size):
        return maps
    import torch
    import torch.nn.functional as F

    out = np.empty((len(maps), 1, size, size), dtype=np.float32)
    for i in range(0, len(maps), chunk):
        t = torch.from_numpy(np.ascontiguousarray(maps[i : i + chunk], dtype=np.float32))
        out[i : i + chunk] = F.interpolate(
            t, size=(size, size), mode="bilinear", align_corners=False
        ).numpy()
    return out


def progress_logger(name: str, every_s: float = 10.0) -> ProgressFn:
    """A progress callback that logs ``[name] stage done/total`` at most every ``every_s`` s."""
    last = [0.0]

    def progress(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] > every_s or done == total:
            last[0] = now
            logger.info("[%s] %s %d/%d", name, stage, done, total)

    return progress


@dataclass
class Measurement:
    """One trained detector measured on one test set.

    Attributes:
        row: JSON-ready metrics and times (see :func:`measure_trained`).
        scores: (N,) raw image scores of the test images.
        maps: (N, 1, M, M) raw anomaly maps at the metric side ``M`` (the eval set's).
        eval_set: the test set the metrics were computed on (images and masks at ``M``).
        calibration: the deployed thresholds.
    """

    row: dict[str, Any]
    scores: np.ndarray
    maps: np.ndarray
    eval_set: ImageSet
    calibration: Calibration


def measure_trained(
    trained: TrainedModel,
    test_set: ImageSet,
    eval_set: ImageSet | None = None,
    repeats: int = 30,
    progress: ProgressFn | None = None,
    per_type: bool = True,
    bundle_dir: Path | None = None,
) -> Measurement:
    """Score, evaluate, export to OpenVINO and time one trained detector.

    Args:
        trained: fitted and calibrated detector.
        test_set: test images at the detector's input side (``detector.config.image_size``).
        eval_set: the same test images (same order) at the side metrics are computed at;
            anomaly maps are resized to it bilinearly. ``None``: metrics at the input side.
        repeats: timed batch-1 calls in torch (OpenVINO: three times as many).
        progress: callback of prediction progress.
        per_type: also compute the metrics per defect type (``row["per_type"]``; else ``{}``).
        bundle_dir: keep the exported bundle there, with the images it was timed on
            (``timing_images.npy``), so :func:`retime_bundle` can time it again later on a
            quiet machine; ``None``: a temporary folder, removed after timing.

    Returns:
        a :class:`Measurement` whose ``row`` holds ``image_auroc``, ``pixel_auroc``, ``aupro``
        (null without masks), ``image_f1`` (at the deployed threshold), ``fit_seconds``,
        ``predict_seconds`` (whole test set, torch), ``torch_ms_per_image`` and
        ``openvino_ms_per_image`` (batch 1) with ``openvino_load_avg`` (the machine's 1-minute
        load average right after that timing: above the core count the time is inflated),
        ``peak_rss_mb`` (this process so far),
        ``image_threshold``, ``n_train``, ``n_val``, ``n_test``, ``paper``, ``config``,
        ``score_selection``, ``epoch_selection`` and ``per_type`` metrics.
    """
    from inspection import evaluation, training
    from inspection.detectors.base import no_progress

    detector = trained.detector
    eval_set = test_set if eval_set is None else eval_set
    if list(eval_set.ids) != list(test_set.ids):
        raise ValueError("eval_set must hold the test images of test_set in the same order")
    start = time.perf_counter()
    out = detector.predict(test_set.images, progress or no_progress)
    predict_seconds = time.perf_counter() - start
    maps = resize_maps(out.anomaly_map, eval_set.masks.shape[-1])
    cal = trained.calibration
    metrics = evaluation.evaluate(out.score, maps, eval_set, cal, per_type=per_type)
    torch_ms = time_per_image(detector.predict, test_set.images, repeats)
    timing_images = test_set.images[:16]
    if bundle_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            training.export_openvino(trained, tmp)
            ov_ms = time_openvino(tmp, timing_images, repeats * 3)
    else:
        if bundle_dir.exists():
            shutil.rmtree(bundle_dir)
        training.export_openvino(trained, bundle_dir)
        np.save(bundle_dir / TIMING_IMAGES, timing_images)
        ov_ms = time_openvino(str(bundle_dir), timing_images, repeats * 3)
    ov_load = round(os.getloadavg()[0], 2)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    row: dict[str, Any] = {
        "image_auroc": metrics["image_auroc"],
        "pixel_auroc": metrics["pixel_auroc"],
        "aupro": metrics["aupro"],
        "image_f1": metrics["image_f1"],
        "fit_seconds": round(trained.fit_seconds, 2),
        "predict_seconds": round(predict_seconds, 2),
        "torch_ms_per_image": round(torch_ms, 2),
        "openvino_ms_per_image": round(ov_ms, 2),
        "openvino_load_avg": ov_load,
        "peak_rss_mb": round(peak_mb, 1),
        "image_threshold": cal.image_threshold,
        "n_train": trained.n_train,
        "n_val": trained.n_val,
        "n_test": len(test_set),
        "paper": detector.paper,
        "config": detector.config.model_dump(mode="json"),
        "score_selection": trained.score_selection,
        "epoch_selection": trained.epoch_selection,
        "per_type": metrics.get("per_type", {}),
    }
    return Measurement(row, out.score, maps, eval_set, cal)


def _child(queue: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        queue.put(("ok", fn(*args)))
    except Exception as exc:  # reported to the parent, which records the failure
        logger.exception("benchmark job %s%r failed", getattr(fn, "__name__", fn), args[:2])
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def run_in_child(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[str, Any]:
    """``fn(*args)`` in a spawned process: ``("ok", result)`` or ``("error", message)``.

    ``fn`` must be a module-level function and ``args`` and the result picklable. A child that
    dies without answering (killed for memory, segfault) is reported as an error too.
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, fn, args))
    proc.start()
    try:
        while True:
            try:
                result: tuple[str, Any] = queue.get(timeout=_CHILD_POLL_S)
                break
            except queue_module.Empty:
                if proc.is_alive():
                    continue
                try:  # it may have answered just before exiting
                    result = queue.get(timeout=1.0)
                except queue_module.Empty:
                    result = ("error", f"child process died (exit code {proc.exitcode})")
                break
    finally:
        proc.join()
    return result
