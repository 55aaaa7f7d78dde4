"""``inspection bench start``: a station process alone, from its start to its first stored result.

For each detector (bundles trained and exported like :mod:`inspection.bench.station_bench`'s,
reused from its work folder), a fresh ``inspection station run`` process on a synthetic camera
at the bundle's size writes to a migrated SQLite database; the parent polls the database and
samples the process:

* ``cold_start_s``: process start -> first result stored, OpenVINO compile cache empty;
* ``warm_start_s``: the same with the cache filled by an earlier start (a restart);
* ``no_cache_start_s``: the same with ``detector.compile_cache: false``;
* ``rss_mib``: peak resident memory of the station process while it scores for a few seconds.

Medians of ``repeats`` starts each. ``python`` may be another interpreter, e.g. a lean install's
(no torch): the bench records whether torch is importable there and its environment's size.
Numbers depend on what else runs on the machine: the load average is recorded with each.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from inspection.bench.measure import end_process
from inspection.bench.report import RESULTS_DIR, markdown_table, stamp, write_results

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]
#: Seconds a start may take before the run counts as failed.
START_TIMEOUT_S = 180.0
COLUMNS = (
    "detector",
    "bundle_mib",
    "cold_start_s",
    "warm_start_s",
    "no_cache_start_s",
    "rss_mib",
    "import_s",
    "load_avg",
)


def _log(msg: str) -> None:
    logger.info(msg)


def _station_yaml(
    path: Path, bundle: Path, size: int, artifacts: Path, cache_dir: Path | None, fps: float
) -> Path:
    cache = f"cache_dir: {str(cache_dir)!r}" if cache_dir else "compile_cache: false"
    path.write_text(
        textwrap.dedent(
            f"""
            id: start-bench
            line: bench
            camera: {{type: synthetic, family: disc, size: {size}, seed: 4, fps: {fps}}}
            detector: {{source: bundle, path: {str(bundle)!r}, {cache}}}
            artifacts_dir: {str(artifacts)!r}
            pipeline: {{stats_interval_s: 0}}
            """
        )
    )
    return path


def stored_results(db: Path) -> int:
    """Rows in the `inspection` table of SQLite file ``db`` (0 while it is not readable)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.05) as conn:
            return int(conn.execute("SELECT count(*) FROM inspection").fetchone()[0])
    except sqlite3.Error:
        return 0


def one_start(
    python: str, config: Path, db: Path, *, run_s: float = 0.0, poll_s: float = 0.01
) -> dict[str, float]:
    """Start a station process; seconds to its first stored result, and its peak RSS (MiB).

    ``run_s`` > 0: let it score that long after the first result (for the memory figure), then
    stop it with SIGTERM (a graceful stop) and wait.
    """
    import psutil

    cmd = [python, "-c", "from inspection.cli import main; main()", "station", "run", str(config)]
    cmd += ["--db", f"sqlite:///{db}", "--no-bootstrap"]
    log = db.with_suffix(".log")
    start = time.perf_counter()
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    handle = psutil.Process(proc.pid)
    peak = 0
    first = None
    try:
        while True:
            now = time.perf_counter() - start
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"station exited with {proc.returncode}: {tail}")
            with contextlib.suppress(psutil.Error):
                peak = max(peak, handle.memory_info().rss)
            if first is None and stored_results(db) > 0:
                first = now
            if first is not None and now >= first + run_s:
                break
            if now > START_TIMEOUT_S:
                raise RuntimeError(f"no stored result within {START_TIMEOUT_S:.0f} s")
            time.sleep(poll_s)
    finally:
        end_process(proc, 60)
    return {"first_result_s": first, "rss_mib": peak / 2**20}


def _fresh_db(python: str, db: Path) -> None:
    """A SQLite database migrated to head (a restarted station does not migrate)."""
    # with its WAL and shared-memory files: a stale -shm next to a new file fails the upgrade
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        path.unlink(missing_ok=True)
    done = subprocess.run(
        [python, "-c", "from inspection.cli import main; main()", "db", "upgrade"],
        env={**os.environ, "INSPECTION_DATABASE_URL": f"sqlite:///{db}"},
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"db upgrade of {db} exited with {done.returncode}: {done.stderr[-2000:]}"
        )


def import_seconds(python: str) -> float:
    """Seconds for ``python`` to start and import the station CLI and pipeline."""
    code = "import inspection.cli, inspection.station.runner, inspection.runtime"
    start = time.perf_counter()
    subprocess.run([python, "-c", code], check=True, timeout=300)
    return time.perf_counter() - start


def measure_detector(
    python: str, bundle: Path, work: Path, *, repeats: int, rss_run_s: float
) -> dict[str, Any]:
    """Cold, warm and no-cache starts (medians of ``repeats``) and peak RSS for one bundle."""
    from inspection.runtime import read_metadata

    size = int(read_metadata(bundle)["input"]["size"])
    db, artifacts, cache = work / "start.sqlite", work / "artifacts", work / "ov-cache"
    kinds: dict[str, list[float]] = {"cold": [], "warm": [], "no_cache": []}
    load: list[float] = []
    for _ in range(repeats):
        shutil.rmtree(cache, ignore_errors=True)
        for kind in ("cold", "warm", "no_cache"):  # cold fills the cache the warm start reads
            _fresh_db(python, db)
            cfg = _station_yaml(
                work / "station.yaml",
                bundle,
                size,
                artifacts,
                None if kind == "no_cache" else cache,
                5.0,
            )
            kinds[kind].append(float(one_start(python, cfg, db)["first_result_s"]))
            load.append(os.getloadavg()[0])
    _fresh_db(python, db)
    cfg = _station_yaml(work / "station.yaml", bundle, size, artifacts, cache, 30.0)
    rss = one_start(python, cfg, db, run_s=rss_run_s)["rss_mib"]
    bundle_mib = sum(p.stat().st_size for p in bundle.iterdir() if p.is_file()) / 2**20
    return {
        "size": size,
        "bundle_mib": bundle_mib,
        "cold_start_s": statistics.median(kinds["cold"]),
        "warm_start_s": statistics.median(kinds["warm"]),
        "no_cache_start_s": statistics.median(kinds["no_cache"]),
        "starts_s": kinds,
        "rss_mib": rss,
        "load_avg": statistics.mean(load),
    }


def environment(python: str) -> dict[str, Any]:
    """Whether ``python`` can import torch, and the size of its environment (``sys.prefix``)."""
    probe = subprocess.run(
        [
            python,
            "-c",
            "import sys, importlib.util as u; print(sys.prefix); print(bool(u.find_spec('torch')))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    prefix, torch = probe.stdout.split()
    total = sum(p.lstat().st_size for p in Path(prefix).rglob("*") if p.is_file())
    return {"python": python, "torch_importable": torch == "True", "env_mb": total / 1e6}


def run(
    keys: Sequence[str],
    *,
    python: str | None = None,
    size: int = 256,
    normals: int = 100,
    repeats: int = 3,
    rss_run_s: float = 5.0,
    workdir: Path = Path("var/bench/station"),
    results_dir: Path = RESULTS_DIR,
    name: str = "station-lean",
    bundles_dir: Path | None = None,
    progress: Progress = _log,
) -> dict[str, Any]:
    """Measure each detector's station start; write ``<results_dir>/<name>.json`` and ``.md``.

    ``bundles_dir``: exported bundles to measure as they are, ``<bundles_dir>/<key>/`` (e.g. a
    suite's ``bench-bundles/suite/<dataset>``), instead of training ``bench station``'s.
    """
    from inspection.bench.station_bench import prepare_bundles
    from inspection.runtime import read_metadata

    python = python or sys.executable
    payload: dict[str, Any] = {
        **stamp(),
        "cpu_count": len(os.sched_getaffinity(0)),
        "repeats": repeats,
        "environment": environment(python),
        "import_s": import_seconds(python),
        "bundles_dir": str(bundles_dir) if bundles_dir else None,
        "detectors": {},
    }
    for key in keys:
        if bundles_dir is not None:
            bundle = bundles_dir / key
            read_metadata(bundle)  # a bundle, or a clear error before any start
        else:
            bundle = prepare_bundles(
                key,
                workdir,
                size=size,
                normals=normals,
                precisions=("fp32",),
                quick=False,
                reuse=True,
                progress=progress,
            )["fp32"]
        work = workdir / "start" / key
        work.mkdir(parents=True, exist_ok=True)
        progress(f"{key}: {repeats} x cold / warm / no-cache starts")
        payload["detectors"][key] = measure_detector(
            python, bundle, work, repeats=repeats, rss_run_s=rss_run_s
        )
    write_results(name, payload, markdown(payload), results_dir)
    return payload


def markdown(payload: dict[str, Any]) -> str:
    """The results as a table, with what was measured."""
    env = payload["environment"]
    rows = [
        {"detector": k, **v, "import_s": payload["import_s"]}
        for k, v in payload["detectors"].items()
    ]
    return "\n".join(
        [
            "A station process alone: `inspection station run` on a synthetic camera, from process"
            " start to the first result stored in SQLite (median of "
            f"{payload['repeats']} starts each); cold: OpenVINO compile cache empty, warm: filled"
            " by an earlier start, no-cache: `compile_cache: false`. rss_mib: peak resident"
            " memory while scoring. import_s: interpreter start + station imports. load_avg: the"
            " machine's 1-minute load average during the starts (above the core count, other"
            " work shared the cores and every time is inflated).",
            "",
            f"Interpreter `{env['python']}`: torch importable: {env['torch_importable']}, "
            f"environment {env['env_mb']:.0f} MB."
            + (
                f" Bundles as exported in `{payload['bundles_dir']}`."
                if payload.get("bundles_dir")
                else ""
            ),
            "",
            markdown_table(rows, COLUMNS),
        ]
    )
