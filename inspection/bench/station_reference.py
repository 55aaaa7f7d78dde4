"""What ``inspection bench station`` compares the station with, on the same IR: anomalib's
``OpenVINOInferencer`` (its outputs named as anomalib expects) and the bare OpenVINO ceiling."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

#: OpenVINO settings of the station's default model loader, for the like-for-like comparison.
SAME_AS_STATION = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}


def call_rate(fn: Callable[[int], Any], n_items: int, seconds: float) -> float:
    """Calls per second of ``fn(i)`` over about ``seconds`` (after one warm-up call)."""
    fn(0)
    start = time.perf_counter()
    done = 0
    while time.perf_counter() - start < seconds or done < 3:
        fn(done % n_items)
        done += 1
    return done / (time.perf_counter() - start)


@contextlib.contextmanager
def _chdir(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def named_ir_copy(bundle: Path, out: Path) -> Path:
    """A copy of the bundle's IR whose outputs are named ``pred_score`` / ``anomaly_map``,
    without the marks that keep a bundle's scoring head f32 under bf16
    (:func:`inspection.ov_export.keep_f32`): anomalib's own export has none, so at its
    defaults it runs the whole graph in bf16 on CPUs with bf16 units."""
    import openvino as ov

    from inspection.ov_export import drop_precision_marks

    model = ov.Core().read_model(bundle / "model.xml")
    drop_precision_marks(model)
    keep = {"pred_score", "anomaly_map"}
    # Drop every other tensor name: compiling merges the names of fused nodes into the
    # outputs, and anomalib picks an arbitrary one of an output's names.
    for op in model.get_ops():
        for port in op.outputs():
            names = port.get_names()
            if names - keep:
                port.get_tensor().set_names(names & keep)
    model.output(0).get_tensor().set_names({"pred_score"})
    model.output(1).get_tensor().set_names({"anomaly_map"})
    if not model.input(0).get_names():
        model.input(0).get_tensor().set_names({"input"})
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, out / "model.xml", compress_to_fp16=False)
    return out / "model.xml"


def anomalib_fps(
    bundle: Path,
    frames: np.ndarray,
    seconds: float,
    workdir: Path,
    config: dict[str, Any] | None = None,
) -> float:
    """anomalib ``OpenVINOInferencer.predict`` frames/s on one uint8 frame at a time: the best
    of three windows of ``seconds / 3`` (its rate on this shared machine varies by up to a
    third between windows; the best is the comparison least favourable to us).

    ``config`` goes to OpenVINO (None: its defaults, which on CPUs with bf16 units run an FP32
    IR in bf16).
    """
    from anomalib.deploy import OpenVINOInferencer

    xml = named_ir_copy(bundle, workdir.resolve() / "anomalib-ir")
    with _chdir(workdir):  # it writes an ``openvino_cache`` folder into the working directory
        inferencer = OpenVINOInferencer(path=xml, device="CPU", config=config)
        return max(
            call_rate(lambda i: inferencer.predict(frames[i]), len(frames), seconds / 3)
            for _ in range(3)
        )


def openvino_ceiling_fps(bundle: Path, frames: np.ndarray, seconds: float) -> float:
    """Bare batch-1 inference frames/s with every core busy: the station's model loader with
    the throughput hint, compiled for batch 1 as a batch-1 station does, one thread per
    stream, each calling ``infer_raw`` on one frame at a time, nothing else (no camera, queue,
    thresholds or database): the rate a batch-1 pipeline would reach at zero overhead
    (batching can exceed it)."""
    return bare_fps(bundle, frames, seconds, hint="throughput", batch=1, precision="f32")


def bare_fps(
    bundle: Path,
    frames: np.ndarray,
    seconds: float,
    *,
    hint: str,
    batch: int,
    precision: str,
    constants_first: bool | None = None,
) -> float:
    """Frames/s of bare ``infer_raw`` calls on ``batch`` frames (a model compiled for exactly
    that many) for about ``seconds``: with the ``throughput`` hint one thread per optimal
    request, all sharing the compiled model; with ``latency`` one request."""
    from inspection.runtime import OpenVinoModel

    model = OpenVinoModel(
        bundle,
        inference_precision=precision,
        performance_hint=hint,
        batch_size=batch,
        constants_first=constants_first,
    )
    streams = 1
    if hint == "throughput":
        streams = max(1, int(model.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
    workers = [model] + [model.sibling() for _ in range(streams - 1)]
    counts = [0] * streams
    stop = threading.Event()
    span = max(1, len(frames) - batch + 1)

    def loop(i: int) -> None:
        while not stop.is_set():
            start = (counts[i] * batch) % span
            workers[i].infer_raw(frames[start : start + batch])
            counts[i] += 1

    for w in workers:  # warm-up
        w.infer_raw(frames[:batch])
    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(streams)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) * batch / (time.perf_counter() - t0)
