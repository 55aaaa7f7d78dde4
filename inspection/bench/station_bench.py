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

import logging
import os
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inspection.bench.report import RESULTS_DIR, stamp, write_results
from inspection.bench.station_defaults import defaults_row, lean_install_mb
from inspection.bench.station_reference import (
    SAME_AS_STATION,
    anomalib_fps,
    call_rate,
    openvino_ceiling_fps,
)
from inspection.bench.station_report import markdown
from inspection.bench.station_runs import station_run

logger = logging.getLogger(__name__)

NAME = "station"


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
        fps = call_rate(_predict_one(model, images), len(images), seconds)
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
    ref = _references(key, fp32, test_images, anomalib_seconds, workdir, payload, progress)
    theirs = ref.anomalib
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
                **_variant_row(sat, paced, ref, camera_fps, payload["cpu_count"]),
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


@dataclass(frozen=True)
class _References:
    """What the variants are compared with (frames/s on the same IR): anomalib's inferencer
    with the station's OpenVINO settings and with its own defaults (None: it failed), and the
    bare OpenVINO ceiling."""

    anomalib: float | None
    anomalib_default: float | None
    ceiling: float


def _references(
    key: str,
    fp32: Path,
    test_images: np.ndarray,
    anomalib_seconds: float,
    workdir: Path,
    payload: dict[str, Any],
    progress: Progress,
) -> _References:
    """Measure the :class:`_References`; where anomalib fails, the error goes to ``payload``
    and the station numbers are kept."""
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
    return _References(theirs, theirs_default, ceiling)


def _variant_row(
    sat: dict[str, Any],
    paced: dict[str, Any],
    ref: _References,
    camera_fps: float,
    cpu_count: int,
) -> dict[str, Any]:
    """One variant's row: throughput from its saturated run ``sat`` (camera always ready,
    every result persisted), latency and drops from its ``paced`` run (camera at
    ``camera_fps``), and its ratios to the references of :func:`_references`."""
    theirs, theirs_default, ceiling = ref.anomalib, ref.anomalib_default, ref.ceiling
    return {
        "frames_per_second": sat["frames_per_second"],
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
        "cpu_bound_fps": 1000.0 * cpu_count / sat["cpu_ms_per_frame"],
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
