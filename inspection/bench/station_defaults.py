"""The ``defaults`` section of ``inspection bench station`` (issue #20): the station with no
setting in its file, a process alone, against anomalib's inferencer at anomalib's defaults, plus
the station process's start times and memory and the lean install's size."""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from inspection.bench.station_reference import anomalib_fps
from inspection.bench.station_runs import accounted, station_alone
from inspection.runtime import read_metadata


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
    progress: Callable[[str], None],
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
                "accounted": accounted(last),
                "rss_mib": last["rss_mib"],
                "load_avg": last["load_avg"],
            }
        )
    progress(f"{key}: station process start (cold / warm compile cache) and memory, alone")
    start = measure_detector(
        python, bundle, workdir / "start-defaults" / key, repeats=start_repeats, rss_run_s=5.0
    )
    ratios = [r["ratio"] for r in rows]
    bf16 = read_metadata(bundle).get("runtime_precision", {}).get("candidates", {}).get("bf16", {})
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
        "bf16_flip_rate": bf16.get("flip_rate"),
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
