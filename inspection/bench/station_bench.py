"""``inspection bench station``: the station runtime end to end, per detector.

For each detector: train it on good parts of the synthetic line (or reuse the bundle from an
earlier run), export FP32 (and FP16 / INT8), then

* **accuracy per precision**: image AUROC of each exported IR on fresh synthetic parts, and its
  bare inference rate (batch 1);
* **station, as fast as it goes**: the real pipeline (capture thread -> bounded queue ->
  preprocess -> OpenVINO -> threshold -> regions -> artifact store + SQLite, every result
  persisted) on a camera that always has the next frame (pre-rendered parts replayed, so
  rendering costs nothing, as with a hardware camera), for each :class:`Variant` asked (batch
  size, OpenVINO threads, parallel scoring workers, requests in flight per worker); frames/s
  is persisted results per second of wall time from the first frame read to the last result
  stored (opening the camera excluded: pre-rendering the synthetic parts takes 0.4 s); latency
  p50/p99 per stage (ms); CPU % (of one core: 200 % = both cores of a 2-core machine) and peak
  RSS of the process;
* **station at camera rate**: the same pipeline with the camera at ``camera_fps`` dropping frames
  when scoring is behind, giving frames captured / scored / persisted / dropped;
* **anomalib's OpenVINOInferencer** on the same IR (``predict`` on one uint8 frame at a time,
  same OpenVINO settings as the station: CPU, latency hint, f32): frames/s. anomalib reads output
  tensors by name, which our IR does not set, so it gets a copy of the IR with the two outputs
  named ``pred_score`` and ``anomaly_map`` (the graph is unchanged).

* **at its defaults** (``defaults``, issue #20): the station with no setting in its file (every
  ``auto``) in a process of its own, against anomalib's inferencer at anomalib's defaults, in
  ``defaults_pairs`` back-to-back pairs, plus that process's cold/warm start and peak RSS
  (:mod:`inspection.bench.start_bench`) and ``lean_install_mb`` (the lean interpreter's
  environment, when given).

The bench may import torch and anomalib (training, the comparison); the station it measures
does not. Numbers depend on everything else running on the machine: the load average during
each run is recorded with it.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inspection.bench.report import RESULTS_DIR, markdown_table, stamp, write_results

logger = logging.getLogger(__name__)

NAME = "station"
COLUMNS = [
    "detector",
    "variant",
    "frames_per_second",
    "anomalib_inferencer_fps",
    "anomalib_default_fps",
    "speedup_vs_anomalib",
    "speedup_vs_anomalib_default",
    "openvino_ceiling_fps",
    "ceiling_vs_anomalib",
    "infer_p50_ms",
    "cpu_percent",
    "cpu_ms_per_frame",
    "cpu_bound_fps",
    "rss_mib",
    "load_avg",
]
PACED_COLUMNS = [
    "detector",
    "variant",
    "camera_fps",
    "frames_captured",
    "frames_scored",
    "frames_persisted",
    "frames_dropped",
    "p50_ms",
    "p99_ms",
    "persisted_p99_ms",
]
PRECISION_COLUMNS = ["detector", "precision", "image_auroc", "openvino_fps", "bundle_mib"]
DEFAULTS_COLUMNS = [
    "detector",
    "frames_per_second",
    "anomalib_default_fps",
    "speedup_median",
    "speedup_min",
    "speedup_max",
    "pairs",
    "warm_start_s",
    "cold_start_s",
    "rss_mib",
    "settings",
    "all_frames_accounted",
    "load_avg",
]

#: Modest training settings per detector so the bench trains each in minutes on 2 cores.
MODEST: dict[str, dict[str, Any]] = {
    "stfpm": {"epochs": 3},
    "cutpaste": {"epochs": 5},
    "memae": {"epochs": 5},
    "memae_feat": {"epochs": 5},
    "ocgan": {"epochs": 3},
    "mkd": {"epochs": 3},
    "ganomaly": {"epochs": 3},
}
TRAIN_OFFSET = 1_000_000  # training parts come from a range the camera never shows
Progress = Callable[[str], None]
#: OpenVINO settings of the station's default model loader, for the like-for-like comparison.
SAME_AS_STATION = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}


@dataclass(frozen=True)
class Variant:
    """Station settings to compare: frames per inference call, OpenVINO threads per compiled
    model (None: OpenVINO's choice, all cores), parallel scoring workers, OpenVINO performance
    hint (``latency``: each inference on every core; ``throughput``: parallel streams, one
    compiled model shared by the workers), inference requests each worker keeps in flight."""

    batch_size: int = 1
    num_threads: int | None = None
    infer_workers: int = 1
    hint: str = "latency"
    requests_per_worker: int = 2

    @property
    def label(self) -> str:
        threads = self.num_threads if self.num_threads is not None else "auto"
        tail = " tput" if self.hint == "throughput" else ""
        return (
            f"b{self.batch_size} t{threads} w{self.infer_workers} r{self.requests_per_worker}{tail}"
        )

    def knobs(self) -> dict[str, Any]:
        """The settings as :func:`station_run` keyword arguments."""
        return {
            "batch_size": self.batch_size,
            "num_threads": self.num_threads,
            "infer_workers": self.infer_workers,
            "hint": self.hint,
            "requests_per_worker": self.requests_per_worker,
            # f32, as SAME_AS_STATION: the variants compare like for like with anomalib at f32
            "precision": "f32",
        }

    @classmethod
    def parse(cls, text: str) -> Variant:
        """``"batch:threads:workers[:hint[:requests]]"``, e.g. ``"1:auto:1"``,
        ``"1:auto:2:throughput"``, ``"1:auto:2:throughput:1"``."""
        try:
            batch, threads, workers, *rest = text.split(":")
            hint = rest[0] if rest else "latency"
            requests = int(rest[1]) if len(rest) > 1 else 2
            if len(rest) > 2 or hint not in ("latency", "throughput") or requests < 1:
                raise ValueError
            return cls(
                int(batch),
                None if threads == "auto" else int(threads),
                int(workers),
                hint,
                requests,
            )
        except ValueError:
            raise ValueError(
                f"variant {text!r}: expected batch:threads:workers[:latency|throughput[:requests]]"
            ) from None


DEFAULT_VARIANTS = (
    Variant(1, None, 1),
    Variant(4, None, 1),
    Variant(1, 1, 1),
    Variant(1, 1, 2),
    Variant(1, None, 2, "throughput"),
    Variant(1, None, 2, "throughput", 1),
    Variant(1, None, 3, "throughput"),
    Variant(4, None, 2, "throughput"),
)


def _log(msg: str) -> None:
    logger.info(msg)


# -- models ------------------------------------------------------------------------------------


def _bundle_ok(path: Path) -> bool:
    return (path / "model.json").is_file() and (path / "model.xml").is_file()


def prepare_bundles(
    key: str,
    workdir: Path,
    *,
    size: int,
    normals: int,
    precisions: Sequence[str],
    quick: bool,
    reuse: bool,
    progress: Progress = _log,
) -> dict[str, Path]:
    """Bundles of detector ``key`` per precision under ``workdir/key/<precision>``."""
    from inspection import training
    from inspection.data.imageset import from_samples
    from inspection.data.synthetic import SyntheticLine
    from inspection.detectors import registry

    base = workdir / key
    wanted = {p: base / p for p in precisions}
    if reuse and all(_bundle_ok(p) and _precision_checked(p) for p in wanted.values()):
        return wanted
    line = SyntheticLine("disc", size=size, seed=0)
    samples = line.normals(normals, start=TRAIN_OFFSET)
    images = np.stack([s.image for s in samples])
    # good parts no model has seen, for the export's precision check (inspection.precision)
    holdout = np.stack([s.image for s in line.normals(48, start=TRAIN_OFFSET + normals)])
    fp32 = base / "fp32"
    if reuse and _bundle_ok(fp32):
        trained = training.load_trained(fp32)
        if not _precision_checked(fp32):  # exported before the check: export again
            progress(f"{key}: re-exporting fp32 with the precision check")
            training.export_openvino(trained, fp32, precision="fp32", holdout=holdout)
    else:
        cls = registry.get(key)
        if quick:
            config = cls.quick_config().model_copy(update={"image_size": size})
        else:
            config = cls.Config(type=key, image_size=size, **MODEST.get(key, {}))
        progress(f"{key}: training on {normals} synthetic parts at {size} px")
        train_set = from_samples(
            list(images),
            [s.mask for s in samples],
            [None] * len(samples),
            [str(s.index) for s in samples],
        )
        trained = training.train(cls(config), train_set)
        training.export_openvino(trained, fp32, precision="fp32", holdout=holdout)
    for precision, path in wanted.items():
        if path == fp32 or (reuse and _bundle_ok(path) and _precision_checked(path)):
            continue
        progress(f"{key}: exporting {precision}")
        training.export_openvino(
            trained,
            path,
            precision=precision,  # type: ignore[arg-type]
            calibration_images=images[: min(64, len(images))],
            holdout=holdout,
        )
    return wanted


def _precision_checked(bundle: Path) -> bool:
    """Whether the bundle carries the export's precision check (``runtime_precision``) with
    its choice of weights (fp16 where the check passed)."""
    from inspection.runtime import read_metadata

    return "weights" in read_metadata(bundle).get("runtime_precision", {})


def _test_set(size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    from inspection.data.synthetic import SyntheticLine

    line = SyntheticLine("disc", size=size, seed=11)
    samples = line.normals(n, start=5000) + line.defects(n, start=9000)
    images = np.stack([s.image for s in samples])
    labels = np.array([s.is_anomalous for s in samples])
    return images, labels


def _rate(fn: Callable[[int], Any], n_items: int, seconds: float) -> float:
    """Calls per second of ``fn(i)`` over about ``seconds`` (after one warm-up call)."""
    fn(0)
    start = time.perf_counter()
    done = 0
    while time.perf_counter() - start < seconds or done < 3:
        fn(done % n_items)
        done += 1
    return done / (time.perf_counter() - start)


def _predict_one(model: Any, images: np.ndarray) -> Callable[[int], Any]:
    return lambda i: model.predict(images[i : i + 1])


def precision_rows(
    key: str, bundles: dict[str, Path], images: np.ndarray, labels: np.ndarray, seconds: float
) -> list[dict[str, Any]]:
    """Image AUROC and bare batch-1 OpenVINO frames/s of each precision's IR."""
    from sklearn.metrics import roc_auc_score

    from inspection.runtime import OpenVinoModel

    rows = []
    for precision, path in bundles.items():
        model = OpenVinoModel(path)
        scores = np.concatenate(
            [model.predict(images[i : i + 8]).raw_score for i in range(0, len(images), 8)]
        )
        fps = _rate(_predict_one(model, images), len(images), seconds)
        size_mib = sum(f.stat().st_size for f in path.glob("model.*")) / 2**20
        rows.append(
            {
                "detector": key,
                "precision": precision,
                "image_auroc": float(roc_auc_score(labels, scores)),
                "openvino_fps": fps,
                "bundle_mib": size_mib,
            }
        )
    return rows


# -- anomalib's inferencer ---------------------------------------------------------------------


@contextlib.contextmanager
def _chdir(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def named_ir_copy(bundle: Path, out: Path) -> Path:
    """A copy of the bundle's IR whose outputs are named ``pred_score`` / ``anomaly_map``."""
    import openvino as ov

    model = ov.Core().read_model(bundle / "model.xml")
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
            _rate(lambda i: inferencer.predict(frames[i]), len(frames), seconds / 3)
            for _ in range(3)
        )


def openvino_ceiling_fps(bundle: Path, frames: np.ndarray, seconds: float) -> float:
    """Bare batch-1 inference frames/s with every core busy: the station's model loader with
    the throughput hint, compiled for batch 1 as a batch-1 station does, one thread per stream, each calling ``infer_raw`` on one
    frame at a time, nothing else (no camera, queue, thresholds or database): the rate a
    batch-1 pipeline would reach at zero overhead (batching can exceed it)."""
    from inspection.runtime import OpenVinoModel

    model = OpenVinoModel(bundle, performance_hint="throughput", batch_size=1)
    streams = max(1, int(model.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
    workers = [model] + [model.sibling() for _ in range(streams - 1)]
    counts = [0] * streams
    stop = threading.Event()

    def loop(i: int) -> None:
        while not stop.is_set():
            workers[i].infer_raw(frames[counts[i] % len(frames)][None])
            counts[i] += 1

    for w in workers:  # warm-up
        w.infer_raw(frames[:1])
    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(streams)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


# -- the station -------------------------------------------------------------------------------


class _Sampler:
    """Peak RSS (bytes) of this process, sampled every 0.2 s while running."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def station_run(
    bundle: Path,
    workdir: Path,
    *,
    size: int,
    frames: int,
    batch_size: int | str = "auto",
    camera_fps: float | None = None,
    cache: int = 64,
    num_threads: int | None = None,
    infer_workers: int | str = "auto",
    hint: str = "auto",
    requests_per_worker: int | str = "auto",
    precision: str = "auto",
) -> dict[str, Any]:
    """Run the station pipeline once on a fresh SQLite database; its stats plus CPU and RSS.

    ``camera_fps`` None: the camera always has the next frame (``overflow: wait``) and the run
    ends after ``frames`` frames; else the camera runs at that rate and drops frames when
    scoring is behind, for ``frames / camera_fps`` seconds. Settings left at ``"auto"`` are
    the station's defaults (:mod:`inspection.station.tuning`, ``inference_precision: auto``).
    """
    import psutil

    from inspection.db import migrate
    from inspection.db.engine import make_engine, make_session_factory
    from inspection.station.config import parse_station_config
    from inspection.station.pipeline import Station

    run_dir = workdir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    engine = make_engine(f"sqlite:///{run_dir / 'station.db'}")
    migrate.upgrade(engine)
    camera: dict[str, Any] = {
        "type": "synthetic",
        "family": "disc",
        "size": size,
        "seed": 3,
        "defect_rate": 0.1,
        "cache": cache,
    }
    if camera_fps is not None:
        camera.update(fps=camera_fps, overflow="drop")
    config = parse_station_config(
        {
            "id": "bench",
            "line": "bench",
            "camera": camera,
            "detector": {
                "source": "bundle",
                "path": str(bundle),
                "num_threads": num_threads,
                "performance_hint": hint,
                "inference_precision": precision,
            },
            "artifacts_dir": str(run_dir / "artifacts"),
            "pipeline": {
                "batch_size": batch_size,
                "infer_workers": infer_workers,
                "requests_per_worker": requests_per_worker,
                "stats_interval_s": 0,
                "reload_poll_s": 1.0,
            },
        }
    )
    station = Station(config, session_factory=make_session_factory(engine))
    proc = psutil.Process()
    gc.collect()
    load_before = os.getloadavg()[0]
    with _Sampler() as rss:
        cpu0, t0 = proc.cpu_times(), time.perf_counter()
        if camera_fps is None:
            stats = station.run(max_frames=frames)
        else:
            stats = station.run(duration_s=frames / camera_fps)
        cpu1, t1 = proc.cpu_times(), time.perf_counter()
    engine.dispose()
    cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    lat = stats["latency_ms"]
    c = stats["counters"]
    return {
        "batch_size": batch_size,
        "num_threads": num_threads,
        "infer_workers": infer_workers,
        "requests_per_worker": requests_per_worker,
        "hint": hint,
        "tuning": stats.get("tuning"),
        "precision": stats.get("precision"),
        "camera_fps": camera_fps,
        "frames_per_second": c["persisted"] / max(stats["persisting_s"], 1e-9),
        "p50_ms": lat.get("verdict", {}).get("p50"),
        "p99_ms": lat.get("verdict", {}).get("p99"),
        "persisted_p99_ms": lat.get("end_to_end", {}).get("p99"),
        "infer_p50_ms": lat.get("infer", {}).get("p50"),
        "frames_captured": c["captured"],
        "frames_scored": c["scored"],
        "frames_persisted": c["persisted"],
        "frames_dropped": c["dropped"],
        "frames_bad": c["bad_frames"],
        "frames_anomalous": c["anomalous"],
        "persist_failures": c["persist_failures"],
        "cpu_percent": 100.0 * cpu_s / (t1 - t0),
        # CPU time the process spent per stored result: what the station costs, whatever else
        # runs on the machine; cores / this = the rate the cores could sustain if idle.
        "cpu_ms_per_frame": 1000.0 * cpu_s / max(1, c["persisted"]),
        "rss_mib": rss.peak / 2**20,
        "elapsed_s": stats["elapsed_s"],
        "load_avg": (load_before + os.getloadavg()[0]) / 2,
        "stages_ms": {k: {"p50": v["p50"], "p99": v["p99"]} for k, v in lat.items()},
    }


# -- the whole bench ---------------------------------------------------------------------------


def _measure(
    key: str,
    payload: dict[str, Any],
    test_images: np.ndarray,
    test_labels: np.ndarray,
    *,
    size: int,
    frames: int,
    normals: int,
    variants: Sequence[Variant],
    precisions: Sequence[str],
    camera_fps: float,
    anomalib_seconds: float,
    workdir: Path,
    quick: bool,
    reuse: bool,
    pairs: int,
    progress: Progress,
    defaults_pairs: int = 0,
    only_defaults: bool = False,
    python: str | None = None,
    start_repeats: int = 3,
) -> None:
    """All measurements of one detector, appended to ``payload``'s tables."""
    bundles = prepare_bundles(
        key,
        workdir,
        size=size,
        normals=normals,
        precisions=precisions,
        quick=quick,
        reuse=reuse,
        progress=progress,
    )
    fp32 = bundles["fp32"]
    if defaults_pairs:
        try:
            payload["defaults"][key] = defaults_row(
                key,
                fp32,
                test_images,
                python=python or sys.executable,
                pairs=defaults_pairs,
                size=size,
                frames=frames,
                anomalib_seconds=min(3.0, anomalib_seconds),
                start_repeats=start_repeats,
                workdir=workdir,
                progress=progress,
            )
        except Exception as exc:  # keep the other tables
            logger.exception("station defaults failed for %s", key)
            payload["errors"][f"{key} (defaults)"] = f"{type(exc).__name__}: {exc}"
    if only_defaults:
        return
    progress(f"{key}: accuracy and speed per precision")
    payload["precision"].extend(
        precision_rows(key, bundles, test_images, test_labels, 2.0 if quick else 5.0)
    )
    progress(f"{key}: anomalib OpenVINOInferencer on the same IR")
    theirs: float | None = None
    theirs_default: float | None = None
    progress(f"{key}: bare OpenVINO throughput ceiling on the same IR")
    ceiling = openvino_ceiling_fps(fp32, test_images, anomalib_seconds / 2)
    try:
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            theirs = anomalib_fps(fp32, test_images, anomalib_seconds, Path(tmp), SAME_AS_STATION)
            theirs_default = anomalib_fps(fp32, test_images, anomalib_seconds, Path(tmp), None)
    except Exception as exc:  # the comparison failing must not lose the station numbers
        logger.exception("anomalib inferencer failed for %s", key)
        payload["errors"][f"{key} (anomalib inferencer)"] = f"{type(exc).__name__}: {exc}"
    measured: list[tuple[Variant, float]] = []  # (variant, saturated frames/s)
    for variant in variants:
        knobs = variant.knobs()
        # Enough frames for ~8 s at anomalib's rate, so start-up does not weigh on fast models.
        n_sat = frames if quick or not theirs else max(frames, min(12_000, int(8 * theirs)))
        progress(f"{key}: station {variant.label}, {n_sat} frames, camera always ready")
        sat = station_run(fp32, workdir / key, size=size, frames=n_sat, **knobs)
        measured.append((variant, sat["frames_per_second"]))
        progress(f"{key}: station {variant.label}, camera at {camera_fps:g} frames/s")
        paced = station_run(
            fp32, workdir / key, size=size, frames=frames, camera_fps=camera_fps, **knobs
        )
        payload["runs"].append(
            {
                "detector": key,
                "variant": variant.label,
                **knobs,
                # throughput: camera always ready, every result persisted
                "frames_per_second": sat["frames_per_second"],
                # latency and drops: camera at camera_fps
                "p50_ms": paced["p50_ms"],
                "p99_ms": paced["p99_ms"],
                "persisted_p99_ms": paced["persisted_p99_ms"],
                "frames_captured": paced["frames_captured"],
                "frames_scored": paced["frames_scored"],
                "frames_persisted": paced["frames_persisted"],
                "frames_dropped": paced["frames_dropped"],
                "camera_fps": camera_fps,
                "infer_p50_ms": sat["infer_p50_ms"],
                "cpu_percent": sat["cpu_percent"],
                "cpu_ms_per_frame": sat["cpu_ms_per_frame"],
                "cpu_bound_fps": 1000.0 * payload["cpu_count"] / sat["cpu_ms_per_frame"],
                "rss_mib": max(sat["rss_mib"], paced["rss_mib"]),
                "anomalib_inferencer_fps": theirs,
                "anomalib_default_fps": theirs_default,
                "openvino_ceiling_fps": ceiling,
                "ceiling_vs_anomalib": ceiling / theirs if theirs else None,
                "speedup_vs_anomalib": sat["frames_per_second"] / theirs if theirs else None,
                "speedup_vs_anomalib_default": (
                    sat["frames_per_second"] / theirs_default if theirs_default else None
                ),
                "load_avg": sat["load_avg"],
                "saturated": sat,
                "paced": paced,
            }
        )
    if pairs and theirs:
        best = max(measured, key=lambda vf: vf[1])[0]
        payload["paired"].append(
            paired_runs(
                key,
                fp32,
                test_images,
                best,
                pairs=pairs,
                size=size,
                frames=frames if quick else max(frames, min(12_000, int(8 * theirs))),
                anomalib_seconds=min(3.0, anomalib_seconds),
                workdir=workdir,
                progress=progress,
            )
        )


def paired_runs(
    key: str,
    bundle: Path,
    test_images: np.ndarray,
    variant: Variant,
    *,
    pairs: int,
    size: int,
    frames: int,
    anomalib_seconds: float,
    workdir: Path,
    progress: Progress,
) -> dict[str, Any]:
    """Station vs anomalib's inferencer on the same IR, back to back, ``pairs`` times.

    Other jobs on a shared machine move both rates by tens of percent between minutes; each
    pair measures anomalib's inferencer (best of its windows) and then the station's saturated
    run one right after the other, and the median of the pairs' ratios is the comparison that
    such drift moves least. ``variant`` is the detector's fastest station variant of this
    bench (chosen on the station's own throughput, before the pairs).
    """
    knobs = variant.knobs()
    rows: list[dict[str, float]] = []
    for pair in range(pairs):
        progress(f"{key}: pair {pair + 1}/{pairs}, anomalib then station {variant.label}")
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            theirs = anomalib_fps(bundle, test_images, anomalib_seconds, Path(tmp), SAME_AS_STATION)
        ours = station_run(bundle, workdir / key, size=size, frames=frames, **knobs)
        rows.append(
            {
                "anomalib_inferencer_fps": theirs,
                "station_fps": ours["frames_per_second"],
                "ratio": ours["frames_per_second"] / theirs,
                "load_avg": ours["load_avg"],
            }
        )
    ratios = [r["ratio"] for r in rows]
    return {
        "detector": key,
        "variant": variant.label,
        "pairs": len(rows),
        "median_speedup_vs_anomalib": statistics.median(ratios),
        "min_speedup": min(ratios),
        "max_speedup": max(ratios),
        "median_station_fps": statistics.median(r["station_fps"] for r in rows),
        "median_anomalib_fps": statistics.median(r["anomalib_inferencer_fps"] for r in rows),
        "runs": rows,
    }


# -- the station at its defaults, a process alone ----------------------------------------------


def _alone_main() -> None:
    """:func:`station_alone`'s subprocess: one :func:`station_run` at the station's defaults."""
    args = json.loads(sys.argv[1])
    out = station_run(
        Path(args["bundle"]), Path(args["workdir"]), size=args["size"], frames=args["frames"]
    )
    print("RESULT " + json.dumps(out), flush=True)


def station_alone(
    python: str, bundle: Path, workdir: Path, *, size: int, frames: int, timeout_s: float = 1800
) -> dict[str, Any]:
    """:func:`station_run` at every default setting in a fresh ``python`` process that imports
    only what the station does (not the bench's torch and anomalib): its result dict."""
    workdir.mkdir(parents=True, exist_ok=True)
    args = {"bundle": str(bundle), "workdir": str(workdir), "size": size, "frames": frames}
    code = "from inspection.bench.station_bench import _alone_main; _alone_main()"
    proc = subprocess.run(
        [python, "-c", code, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"station process exited with {proc.returncode}: {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    return result


def _accounted(run: dict[str, Any]) -> bool:
    """Every frame captured was scored, dropped or bad, and every scored one persisted."""
    return (
        run["frames_captured"] == (run["frames_scored"] + run["frames_dropped"] + run["frames_bad"])
        and run["frames_scored"] == run["frames_persisted"] + run["persist_failures"]
    )


def _settings_label(run: dict[str, Any]) -> str:
    t = run.get("tuning") or {}
    return (
        f"b{t.get('batch_size')} w{t.get('infer_workers')} r{t.get('requests_per_worker')} "
        f"{t.get('performance_hint')} {run.get('precision')}"
    )


def defaults_row(
    key: str,
    bundle: Path,
    test_images: np.ndarray,
    *,
    python: str,
    pairs: int,
    size: int,
    frames: int,
    anomalib_seconds: float,
    start_repeats: int,
    workdir: Path,
    progress: Progress,
) -> dict[str, Any]:
    """The station at its default settings against anomalib's ``OpenVINOInferencer`` at its
    defaults (OpenVINO's: bf16 on CPUs with bf16 units), ``pairs`` back-to-back pairs on the
    same IR, then the station process's start times and memory (:mod:`start_bench`).

    Each pair: anomalib's inferencer in this process (best of three windows), then a station
    process alone (:func:`station_alone`, camera always ready, every result persisted) for
    about 8 s at anomalib's rate. ``speedup_median`` = the median of the pairs' ratios.
    """
    from inspection.bench.start_bench import measure_detector

    rows: list[dict[str, Any]] = []
    last: dict[str, Any] = {}
    for pair in range(pairs):
        progress(f"{key}: defaults pair {pair + 1}/{pairs}, anomalib's defaults then the station's")
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            theirs = anomalib_fps(bundle, test_images, anomalib_seconds, Path(tmp), None)
        n = max(frames, min(12_000, int(8 * theirs)))
        last = station_alone(python, bundle, workdir / key / "defaults", size=size, frames=n)
        rows.append(
            {
                "anomalib_default_fps": theirs,
                "station_fps": last["frames_per_second"],
                "ratio": last["frames_per_second"] / theirs,
                "frames": n,
                "frames_captured": last["frames_captured"],
                "frames_persisted": last["frames_persisted"],
                "frames_dropped": last["frames_dropped"],
                "accounted": _accounted(last),
                "rss_mib": last["rss_mib"],
                "load_avg": last["load_avg"],
            }
        )
    progress(f"{key}: station process start (cold / warm compile cache) and memory, alone")
    start = measure_detector(
        python, bundle, workdir / "start-defaults" / key, repeats=start_repeats, rss_run_s=5.0
    )
    ratios = [r["ratio"] for r in rows]
    return {
        "frames_per_second": statistics.median(r["station_fps"] for r in rows),
        "anomalib_default_fps": statistics.median(r["anomalib_default_fps"] for r in rows),
        "speedup_median": statistics.median(ratios),
        "speedup_min": min(ratios),
        "speedup_max": max(ratios),
        "pairs": len(rows),
        "warm_start_s": start["warm_start_s"],
        "cold_start_s": start["cold_start_s"],
        "no_cache_start_s": start["no_cache_start_s"],
        "rss_mib": start["rss_mib"],
        "tuning": last.get("tuning"),
        "precision": last.get("precision"),
        "settings": _settings_label(last),
        "all_frames_accounted": all(r["accounted"] for r in rows),
        "load_avg": statistics.mean([*(r["load_avg"] for r in rows), start["load_avg"]]),
        "runs": rows,
        "starts_s": start["starts_s"],
    }


def lean_install_mb(python: str | None) -> dict[str, Any] | None:
    """Size of the lean install (no ``train`` extra) whose interpreter is ``python``, and
    whether torch is importable there (None: no lean interpreter given)."""
    if not python:
        return None
    from inspection.bench.start_bench import environment

    return environment(python)


def run(
    keys: Sequence[str],
    *,
    size: int = 256,
    frames: int = 600,
    normals: int = 100,
    variants: Sequence[Variant] = DEFAULT_VARIANTS,
    precisions: Sequence[str] = ("fp32", "fp16", "int8"),
    camera_fps: float = 60.0,
    anomalib_seconds: float = 10.0,
    workdir: Path = Path("var/bench/station"),
    results_dir: Path = RESULTS_DIR,
    quick: bool = False,
    reuse: bool = True,
    pairs: int = 5,
    progress: Progress = _log,
    defaults_pairs: int = 5,
    only_defaults: bool = False,
    python: str | None = None,
    lean_python: str | None = None,
    start_repeats: int = 3,
    name: str = NAME,
) -> dict[str, Any]:
    """Measure every detector in ``keys``; write ``<results_dir>/<name>.json`` and ``.md``.

    ``pairs``: interleaved station/anomalib pairs per detector on its fastest variant (0: none).
    ``defaults_pairs``: pairs of the station at its default settings, a process alone, against
    anomalib's inferencer at its defaults, plus the station's start times and memory (the
    ``defaults`` section; 0: none); ``only_defaults``: nothing else. ``python``: interpreter
    of the station processes (default: this one); ``lean_python``: the lean install's, for
    ``lean_install_mb``.
    """
    payload: dict[str, Any] = {
        **stamp(),
        "size": size,
        "frames": frames,
        "cpu_count": len(os.sched_getaffinity(0)),
        "camera_fps": camera_fps,
        "runs": [],
        "paired": [],
        "precision": [],
        "defaults": {},
    }
    lean = lean_install_mb(lean_python)
    payload["lean_install_mb"] = lean["env_mb"] if lean else None
    payload["lean_install"] = lean
    precisions = list(dict.fromkeys(["fp32", *precisions]))
    workdir.mkdir(parents=True, exist_ok=True)
    test_images, test_labels = _test_set(size, 24 if quick else 100)
    opts: dict[str, Any] = {
        "size": size,
        "frames": frames,
        "normals": normals,
        "variants": variants,
        "precisions": precisions,
        "camera_fps": camera_fps,
        "anomalib_seconds": anomalib_seconds,
        "workdir": workdir,
        "quick": quick,
        "reuse": reuse,
        "pairs": pairs,
        "progress": progress,
        "defaults_pairs": defaults_pairs,
        "only_defaults": only_defaults,
        "python": python,
        "start_repeats": start_repeats,
    }
    payload["errors"] = {}
    for key in keys:
        try:
            _measure(key, payload, test_images, test_labels, **opts)
        except Exception as exc:  # one detector failing must not lose the others' numbers
            logger.exception("station bench failed for %s", key)
            payload["errors"][key] = f"{type(exc).__name__}: {exc}"
    write_results(name, payload, markdown(payload), results_dir)
    return payload


def markdown(payload: dict[str, Any]) -> str:
    """The results page: what was measured, then the tables."""
    parts = [
        f"Station runtime at {payload['size']}x{payload['size']} on {payload['cpu_count']} CPU "
        "cores, synthetic disc line (10 % defective), SQLite + local artifact store, every "
        "result persisted (frames and heatmaps kept for anomalous parts only). "
        "`load_avg` = the machine's 1-minute load average during the run (other jobs share "
        "the machine). Method: `inspection/bench/station_bench.py`.",
    ]
    parts += _defaults_markdown(payload)
    if not payload["runs"] and not payload["precision"]:  # --only-defaults
        return "\n\n".join(parts + _errors_markdown(payload))
    parts += [
        "## Throughput: camera always ready",
        "`variant` = b<frames per inference call> t<OpenVINO threads per model, auto = all "
        "cores> w<parallel scoring workers> r<inference requests each worker keeps in flight: "
        "r2 submits the next frame before finishing the last, r1 waits for each>, `tput` = "
        "OpenVINO throughput hint (parallel streams, one compiled model shared by the workers; "
        "otherwise the latency hint, with one compiled model per worker, threads unpinned when "
        "there are several). `frames_per_second` = results persisted per second, from the "
        "first frame read (model loaded, camera open) to the last result stored, "
        "over enough frames for about 8 s at anomalib's rate (600 to 12000); "
        "`anomalib_inferencer_fps` = anomalib "
        "`OpenVINOInferencer.predict` on the same IR with the station's default OpenVINO "
        "settings (latency hint, f32; inference only, nothing stored; best of three windows), `speedup_vs_anomalib` "
        "relative to it; `anomalib_default_fps` = the same with OpenVINO's defaults (bf16 "
        "inference on CPUs with bf16 units: faster on memory-bound graphs, shifted scores), "
        "`speedup_vs_anomalib_default` relative to that (how anomalib is used out of the box); "
        "`openvino_ceiling_fps` = bare batch-1 inference on the same IR with every core busy "
        "(throughput hint, compiled for batch 1, one thread per stream, no camera, queue or database): what a "
        "batch-1 pipeline could store per second at zero overhead (batched variants can pass "
        "it), and `ceiling_vs_anomalib` its ratio to anomalib's inferencer; "
        "`cpu_percent` of one core; `cpu_ms_per_frame` = "
        "CPU time of the station process per stored result and `cpu_bound_fps` = cores / that, "
        "the rate these cores could sustain without the other jobs sharing them (an upper "
        "bound, not a measurement).",
        markdown_table(payload["runs"], COLUMNS),
        f"## Latency and drops: camera at {payload['camera_fps']:g} frames/s",
        "`p50_ms`/`p99_ms` = capture -> verdict; `persisted_p99_ms` = capture -> row "
        "committed (results are written in batches); frames the pipeline could not take are "
        "dropped at the camera and counted.",
        markdown_table(payload["runs"], PACED_COLUMNS),
        *_paired_markdown(payload.get("paired") or []),
        "## Export precision: accuracy and bare inference speed",
        "Image AUROC on 100 good + 100 defective synthetic parts; `openvino_fps` = batch-1 "
        "`OpenVinoModel.predict` calls per second.",
        markdown_table(payload["precision"], PRECISION_COLUMNS),
    ]
    stage_rows = [
        {
            "detector": r["detector"],
            "variant": r["variant"],
            **{
                f"{k} p50/p99": f"{v['p50']:.1f} / {v['p99']:.1f}"
                for k, v in r["paced"]["stages_ms"].items()
            },
        }
        for r in payload["runs"]
    ]
    if stage_rows:
        cols = list(dict.fromkeys(k for row in stage_rows for k in row))
        parts += [
            f"## Per-stage latency at {payload['camera_fps']:g} frames/s (ms)",
            markdown_table(stage_rows, cols),
        ]
    return "\n\n".join(parts + _errors_markdown(payload))


def _errors_markdown(payload: dict[str, Any]) -> list[str]:
    errors = payload.get("errors") or {}
    if not errors:
        return []
    return ["## Failed", "\n".join(f"- {k}: {v}" for k, v in errors.items())]


def _defaults_markdown(payload: dict[str, Any]) -> list[str]:
    defaults = payload.get("defaults") or {}
    lean = payload.get("lean_install")
    parts = ["## At its defaults: the station alone against anomalib at its defaults"]
    parts.append(
        f"Lean install (no `train` extra, `{lean['python']}`): {lean['env_mb']:.0f} MB on disk, "
        f"torch importable: {lean['torch_importable']}."
        if lean
        else "Lean install: not measured in this run (no `--lean-python`)."
    )
    if not defaults:
        return parts
    parts += [
        "The station with no setting in its file (batch, workers, requests in flight, "
        "performance hint and precision `auto`: `inspection/station/tuning.py`, "
        "`inspection.runtime.resolve_precision`) in a process of its own (it imports only what "
        "the station does), camera always ready, every result persisted, against anomalib's "
        "`OpenVINOInferencer` at its defaults (OpenVINO's: bf16 on CPUs with bf16 units; best "
        "of three windows) on the same IR, back to back `pairs` times; `speedup_median` = the "
        "median of the pairs' ratios. `settings` = what `auto` chose (b<batch> w<workers> "
        "r<requests per worker> hint precision). `cold_start_s`/`warm_start_s` = "
        "`inspection station run` start -> first stored result with an empty / filled OpenVINO "
        "compile cache, `rss_mib` = that process's peak resident memory while scoring "
        "(`inspection/bench/start_bench.py`). `all_frames_accounted`: captured = scored + "
        "dropped + bad and scored = persisted + failed in every run.",
        markdown_table([{"detector": k, **v} for k, v in defaults.items()], DEFAULTS_COLUMNS),
    ]
    return parts


def _paired_markdown(paired: Sequence[dict[str, Any]]) -> list[str]:
    if not paired:
        return []
    cols = [
        "detector",
        "variant",
        "pairs",
        "median_speedup_vs_anomalib",
        "min_speedup",
        "max_speedup",
        "median_station_fps",
        "median_anomalib_fps",
    ]
    each = [
        {"detector": p["detector"], "pair": i + 1, **r}
        for p in paired
        for i, r in enumerate(p["runs"])
    ]
    return [
        "## Paired: station and anomalib back to back",
        "Other jobs on this machine move every rate above by tens of percent from one minute "
        "to the next, so the station's fastest variant per detector was measured again in "
        "interleaved pairs: anomalib's `OpenVINOInferencer` (same settings as above, best of "
        "three windows), then the station's saturated run, right after each other. "
        "`median_speedup_vs_anomalib` = the median of the pairs' ratios.",
        markdown_table(list(paired), cols),
        markdown_table(each, list(each[0])),
    ]
