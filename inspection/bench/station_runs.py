"""One run of the real station pipeline for ``inspection bench station``: in this process
(:func:`station_run`) or in a fresh process that imports only what a station does
(:func:`station_alone`)."""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


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
    settings: dict[str, Any] = {
        "batch_size": batch_size,
        "num_threads": num_threads,
        "infer_workers": infer_workers,
        "requests_per_worker": requests_per_worker,
        "hint": hint,
    }
    config = parse_station_config(
        _station_file(bundle, run_dir, size, camera_fps, cache, precision, **settings)
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
    return {
        **settings,
        "tuning": stats.get("tuning"),
        "precision": stats.get("precision"),
        "camera_fps": camera_fps,
        **_stats_row(stats),
        "cpu_percent": 100.0 * cpu_s / (t1 - t0),
        # CPU time the process spent per stored result: what the station costs, whatever else
        # runs on the machine; cores / this = the rate the cores could sustain if idle.
        "cpu_ms_per_frame": 1000.0 * cpu_s / max(1, stats["counters"]["persisted"]),
        "rss_mib": rss.peak / 2**20,
        "elapsed_s": stats["elapsed_s"],
        "load_avg": (load_before + os.getloadavg()[0]) / 2,
        "stages_ms": {
            k: {"p50": v["p50"], "p99": v["p99"]} for k, v in stats["latency_ms"].items()
        },
    }


def _station_file(
    bundle: Path,
    run_dir: Path,
    size: int,
    camera_fps: float | None,
    cache: int,
    precision: str,
    *,
    batch_size: int | str,
    num_threads: int | None,
    infer_workers: int | str,
    requests_per_worker: int | str,
    hint: str,
) -> dict[str, Any]:
    """The station file of a bench run: the synthetic disc line (10 % defective) at ``size``,
    the bundle with the given OpenVINO settings, a database and artifacts in ``run_dir``."""
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
    return {
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


def _stats_row(stats: dict[str, Any]) -> dict[str, Any]:
    """The station's rate, latency and frame counts of a run."""
    lat = stats["latency_ms"]
    c = stats["counters"]
    return {
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
    }


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
    code = "from inspection.bench.station_runs import _alone_main; _alone_main()"
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


def accounted(run: dict[str, Any]) -> bool:
    """Every frame captured was scored, dropped or bad, and every scored one persisted."""
    return (
        run["frames_captured"] == (run["frames_scored"] + run["frames_dropped"] + run["frames_bad"])
        and run["frames_scored"] == run["frames_persisted"] + run["persist_failures"]
    )
