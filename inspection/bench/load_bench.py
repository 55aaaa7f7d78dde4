"""``inspection bench load``: many stations, one PostgreSQL, faults survived.

N simulated stations (separate processes, the real :class:`~inspection.station.pipeline.Station`
runtime with its persist stage, artifact store and local spool) write to one local PostgreSQL
(a temporary durable cluster, :func:`inspection.db.testing.start_temporary_postgres`) at a fixed
camera rate. The scorer is a fake fast NumPy model, so the bench measures the persistence path.
Two runs, each on a fresh database:

* ``normal``: no faults.
* ``faults``: PostgreSQL is stopped (``pg_ctl stop -m fast``) for ``outage_s`` seconds at 30 %
  of the run and started again; during the outage one station is killed with SIGKILL while it
  writes a spool record (the driver waits until a ``.tmp`` record file exists, then kills), and
  just after the restart another is killed with SIGKILL while it replays its spool; both are
  restarted at once (the first one waits for the database to register).

The simulated camera is a *durable* source, like a PLC-triggered camera writing files into a
watched folder: frame ``n`` of a station is due at ``t0 + n / fps``; a frame is acknowledged
only when its result is stored in the database or fsync'd in the spool, and the camera's
checkpoint (the oldest unacknowledged frame, fsync'd) is where a restarted station resumes.
What a SIGKILL loses from memory is therefore delivered again with the same idempotency key
(``<station>-<frame>``) and must be stored exactly once.

Per run: ``produced`` (distinct frames the cameras delivered), ``stored`` (rows in the
database), ``duplicates`` (rows whose frame is stored more than once), ``missing`` (frames
produced but not stored), ``p99_write_ms`` (per result, the time its batch took to become
durable: database commit or spool fsync), end-to-end latency, spool and replay counters.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inspection.bench.load_station import MODEL_SIZE, station_main
from inspection.bench.report import stamp, write_results

NAME = "load"
COLUMNS = (
    "name",
    "produced",
    "stored",
    "duplicates",
    "missing",
    "p99_write_ms",
    "p50_write_ms",
    "max_write_ms",
    "p99_end_to_end_ms",
    "spooled",
    "replayed",
    "spool_discarded",
    "persist_failures",
)


@dataclass(frozen=True)
class LoadConfig:
    """What one ``inspection bench load`` measures.

    ``stations`` processes at ``fps`` frames/s each for ``duration_s`` seconds per run;
    ``faults``: also run the fault scenario; ``outage_s``: how long PostgreSQL stays down.
    ``frame_size``: camera frame side in pixels; ``defect_every``: about one frame in this many
    is anomalous (its frame, heatmap and crops are stored as artifacts).
    """

    stations: int = 8
    fps: float = 10.0
    duration_s: float = 600.0
    faults: bool = True
    normal: bool = True
    outage_s: float = 60.0
    frame_size: int = 128
    defect_every: int = 20
    persist_batch: int = 32

    def __post_init__(self) -> None:
        if self.stations < 1 or self.fps <= 0 or self.duration_s <= 0:
            raise ValueError("stations, fps and duration_s must be positive")
        if self.faults and self.stations < 2:
            raise ValueError("the fault run kills two stations: use --stations 2 or more")
        if self.faults and self.outage_s >= self.duration_s * 0.6:
            raise ValueError("outage_s must be shorter than 60 % of duration_s")


# -- PostgreSQL control --------------------------------------------------------------------


class PostgresControl:
    """Stops and starts the temporary cluster behind ``url`` (same port and settings)."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        from inspection.db.testing import find_postgres_bindir

        self.url = make_url(url)
        engine = create_engine(self.url)
        with engine.connect() as conn:
            self.datadir = Path(str(conn.execute(text("SHOW data_directory")).scalar()))
        engine.dispose()
        bindir = find_postgres_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL binaries not found")
        self.pg_ctl = str(bindir / "pg_ctl")
        self.log = self.datadir.parent / "server.log"
        self.user: int | None = None
        self.group: int | None = None
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            self.user, self.group = entry.pw_uid, entry.pw_gid

    def _run(self, args: list[str]) -> None:
        extra: dict[str, Any] = {}
        if self.user is not None:
            extra = {"user": self.user, "group": self.group, "extra_groups": []}
        result = subprocess.run(
            [self.pg_ctl, "-D", str(self.datadir), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd="/",
            **extra,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl {args[-1]} failed: {result.stderr.strip()[-500:]}")

    def stop(self) -> None:
        """Fast shutdown: open transactions are rolled back, clients disconnected."""
        self._run(["-m", "fast", "-w", "stop"])

    def start(self) -> None:
        """Start again on the same port (the temporary cluster's settings)."""
        opts = (
            f"-p {self.url.port} -c listen_addresses=127.0.0.1 "
            "-c unix_socket_directories='' -c max_connections=50"
        )
        self._run(["-l", str(self.log), "-w", "-t", "60", "-o", opts, "start"])


# -- the driver ----------------------------------------------------------------------------


@dataclass
class StationProc:
    """A simulated station process and its files."""

    name: str
    spec: Path
    report: Path
    spool: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    incarnations: int = 0

    def start(self, env: dict[str, str]) -> None:
        self.incarnations += 1
        log = open(self.log, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "inspection.bench.load_station", str(self.spec)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=os.getcwd(),
        )
        log.close()


@dataclass
class RunResult:
    """One run's numbers (see the module docstring)."""

    name: str
    produced: int = 0
    stored: int = 0
    duplicates: int = 0
    missing: int = 0
    p99_write_ms: float = 0.0
    p50_write_ms: float = 0.0
    max_write_ms: float = 0.0
    p99_end_to_end_ms: float = 0.0
    spooled: int = 0
    replayed: int = 0
    spool_discarded: int = 0
    persist_failures: int = 0
    spool_left: int = 0
    write_samples: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    stations: dict[str, dict[str, Any]] = field(default_factory=dict)


def _fake_bundle(folder: Path) -> Path:
    from inspection.runtime import BUNDLE_FORMAT

    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": BUNDLE_FORMAT,
        "detector": "fake-brightness",
        "input": {"size": MODEL_SIZE},
        "precision": "fp32",
        "created": "2025-01-01T00:00:00+00:00",
        "calibration": {"image_threshold": 0.5, "pixel_threshold": 0.5},
    }
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


def _station_config(name: str, run_dir: Path, bundle: Path, cfg: LoadConfig) -> dict[str, Any]:
    return {
        "id": name,
        "line": "load",
        "camera": {"type": "synthetic", "size": cfg.frame_size},  # replaced by the sim camera
        "detector": {"source": "bundle", "path": str(bundle)},
        "artifacts_dir": str(run_dir / "artifacts"),
        "retention": {"frames": "anomalous", "heatmaps": "anomalous", "crops": True},
        "outputs": {"log": "none"},
        "pipeline": {
            "persist_batch": cfg.persist_batch,
            "persist_retry_s": 5,
            "reload_poll_s": 5,
            "stats_interval_s": 0,
        },
    }


def _wait_for_tmp(spool: Path, timeout_s: float) -> bool:
    """Poll ``spool`` until a half-written record (``*.tmp``) exists; True when seen."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if any(e.name.endswith(".tmp") for e in os.scandir(spool)):
                return True
        time.sleep(0.0005)
    return False


def _records(spool: Path) -> int:
    with contextlib.suppress(OSError):
        return sum(1 for e in os.scandir(spool) if e.name.endswith(".rec"))
    return 0


def _count(url: str) -> tuple[int, int, dict[str, int]]:
    """Rows, distinct frames, and rows per station in the database of ``url``."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = int(conn.execute(text("SELECT count(*) FROM inspection")).scalar() or 0)
            distinct = int(
                conn.execute(text("SELECT count(DISTINCT frame_ref) FROM inspection")).scalar() or 0
            )
            per_station = {
                str(name): int(n)
                for name, n in conn.execute(
                    text(
                        "SELECT s.name, count(*) FROM inspection i JOIN station s "
                        "ON s.id = i.station_id GROUP BY s.name"
                    )
                )
            }
    finally:
        engine.dispose()
    return rows, distinct, per_station


def _fresh_database(server_url: str, name: str) -> str:
    """A new, migrated database ``load_<name>`` on the server: its URL (3 s connect timeout)."""
    from sqlalchemy.engine import make_url

    from inspection.db import migrate
    from inspection.db.engine import make_engine
    from inspection.db.testing import create_database

    url = create_database(server_url, f"load_{name}")
    url = make_url(url).update_query_dict({"connect_timeout": "3"}).render_as_string(False)
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url


def _start_stations(
    cfg: LoadConfig, run_dir: Path, bundle: Path, env: dict[str, str], t0: float
) -> list[StationProc]:
    """One process per station, each with its spec file; cameras start together at ``t0``."""
    total = round(cfg.duration_s * cfg.fps)
    stations: list[StationProc] = []
    for i in range(cfg.stations):
        sname = f"load-{i:02d}"
        sp = StationProc(
            sname,
            spec=run_dir / "specs" / f"{sname}.json",
            report=run_dir / "reports" / f"{sname}.json",
            spool=run_dir / "spool" / sname,
            log=run_dir / "logs" / f"{sname}.log",
        )
        spec = {
            "config": _station_config(sname, run_dir, bundle, cfg),
            "t0": t0,
            "fps": cfg.fps,
            "total": total,
            "frame_size": cfg.frame_size,
            "defect_every": cfg.defect_every,
            "checkpoint": str(run_dir / "camera" / f"{sname}.json"),
            "report": str(sp.report),
        }
        sp.spec.write_text(json.dumps(spec))
        sp.start(env)
        stations.append(sp)
    return stations


Event = Callable[..., None]


def _kill_and_restart(
    victim: StationProc, env: dict[str, str], event: Event, what: str, **seen: Any
) -> None:
    """SIGKILL ``victim`` now, record ``what`` (with its spool's records left), restart it."""
    assert victim.proc is not None
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait()
    event(what, station=victim.name, **seen, spool_records=_records(victim.spool))
    victim.start(env)
    event("restarted", station=victim.name)


def _inject_faults(
    cfg: LoadConfig,
    url: str,
    t0: float,
    stations: list[StationProc],
    env: dict[str, str],
    event: Event,
) -> None:
    """A database outage, one station killed mid spool write during it, another killed while
    it replays its spool after it."""
    pg = PostgresControl(url)
    outage_at = t0 + cfg.duration_s * 0.3
    time.sleep(max(0.0, outage_at - time.time()))
    pg.stop()
    event("postgresql stopped")
    # SIGKILL one station mid spool write (a .tmp record exists at that instant).
    time.sleep(cfg.outage_s * 0.4)
    caught = _wait_for_tmp(stations[0].spool, timeout_s=cfg.outage_s * 0.4)
    _kill_and_restart(stations[0], env, event, "SIGKILL during spool write", tmp_record_seen=caught)
    time.sleep(max(0.0, outage_at + cfg.outage_s - time.time()))
    pg.start()
    event("postgresql started")
    # SIGKILL another station while it replays its spool into the database.
    victim = stations[1]
    deadline = time.monotonic() + 15.0
    before = _records(victim.spool)
    while time.monotonic() < deadline and _records(victim.spool) >= before > 0:
        time.sleep(0.002)  # kill right after its first replayed records were deleted
    _kill_and_restart(victim, env, event, "SIGKILL during replay", spool_records_before=before)


def _wait_all(stations: list[StationProc], deadline: float, event: Event) -> None:
    """Wait for every station to finish (killed when past ``deadline``)."""
    for sp in stations:
        assert sp.proc is not None
        try:
            sp.proc.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            sp.proc.kill()
            sp.proc.wait()
            event("station did not finish", station=sp.name)
    event("all stations finished")


STATION_COUNTERS = (
    "captured",
    "persisted",
    "dropped",
    "spooled",
    "replayed",
    "spool_discarded",
    "persist_failures",
)


def _collect(result: RunResult, stations: list[StationProc], url: str) -> None:
    """Add the stations' reports and the database's counts to ``result``."""
    rows, distinct, per_station = _count(url)
    write_ms: list[float] = []
    e2e: list[float] = []
    for sp in stations:
        if not sp.report.exists():
            raise RuntimeError(f"station {sp.name} wrote no report; see {sp.log}")
        rep = json.loads(sp.report.read_text())
        c = rep["counters"]
        write_ms.extend(rep["write_ms"])
        e2e_p99 = rep["latency_ms"].get("end_to_end", {}).get("p99", 0.0)
        e2e.append(e2e_p99)
        result.produced += int(rep["produced"])
        result.spooled += c.get("spooled", 0)
        result.replayed += c.get("replayed", 0)
        result.spool_discarded += c.get("spool_discarded", 0)
        result.persist_failures += c.get("persist_failures", 0)
        result.spool_left += int(rep["spool_left"])
        result.stations[sp.name] = {
            "produced": int(rep["produced"]),
            "stored": per_station.get(sp.name, 0),
            "incarnations": sp.incarnations,
            "resumed_at": rep["resumed_at"],
            "end_to_end_p99_ms": round(e2e_p99, 1),
            "counters": {k: c.get(k, 0) for k in STATION_COUNTERS},
        }
    result.stored = rows
    result.duplicates = rows - distinct
    result.missing = result.produced - distinct
    arr = np.asarray(write_ms, dtype=np.float64)
    result.write_samples = int(arr.size)
    if arr.size:
        result.p99_write_ms = round(float(np.percentile(arr, 99)), 2)
        result.p50_write_ms = round(float(np.percentile(arr, 50)), 2)
        result.max_write_ms = round(float(arr.max()), 2)
    result.p99_end_to_end_ms = round(max(e2e, default=0.0), 1)


def run_once(
    name: str,
    cfg: LoadConfig,
    server_url: str,
    workdir: Path,
    *,
    faults: bool,
    progress: Callable[[str], None],
) -> RunResult:
    """One run on a fresh database: start the stations, inject faults, count."""
    url = _fresh_database(server_url, name)
    run_dir = workdir / name
    for sub in ("specs", "reports", "camera", "spool", "logs"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    bundle = _fake_bundle(workdir / "bundle")
    t0 = time.time() + 5.0  # every camera starts together, after the processes are up
    env = {
        **os.environ,
        "INSPECTION_DATABASE_URL": url,
        "INSPECTION_SPOOL_DIR": str(run_dir / "spool"),
    }
    env.pop("INSPECTION_METRICS_PORT", None)
    stations = _start_stations(cfg, run_dir, bundle, env, t0)
    result = RunResult(name=name)

    def event(what: str, **extra: Any) -> None:
        at = round(time.time() - t0, 2)
        result.events.append({"t_s": at, "event": what, **extra})
        progress(f"{name}: t={at:.1f}s {what} {extra if extra else ''}")

    progress(f"{name}: {cfg.stations} stations x {cfg.fps:g} fps x {cfg.duration_s:g} s")
    if faults:
        _inject_faults(cfg, url, t0, stations, env, event)
    _wait_all(stations, t0 + cfg.duration_s + 600.0, event)
    _collect(result, stations, url)
    progress(
        f"{name}: produced {result.produced}, stored {result.stored}, duplicates "
        f"{result.duplicates}, missing {result.missing}, p99 write {result.p99_write_ms} ms"
    )
    return result


def run(
    cfg: LoadConfig,
    *,
    results_dir: Path,
    workdir: Path | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Both runs on one temporary durable PostgreSQL; write ``load.json`` / ``load.md``."""
    from inspection.db.testing import start_temporary_postgres

    t_start = time.time()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="load-")))
        workdir.mkdir(parents=True, exist_ok=True)
        url = stack.enter_context(start_temporary_postgres(workdir / "pg", durable=True))
        runs: list[RunResult] = []
        if cfg.normal:
            runs.append(run_once("normal", cfg, url, workdir, faults=False, progress=progress))
        if cfg.faults:
            runs.append(run_once("faults", cfg, url, workdir, faults=True, progress=progress))
    payload: dict[str, Any] = {
        **stamp(),
        "config": asdict(cfg),
        "load_average": list(os.getloadavg()),
        "wall_s": round(time.time() - t_start, 1),
        "ok": all(r.duplicates == 0 and r.missing == 0 and r.produced == r.stored for r in runs),
        "runs": [asdict(r) for r in runs],
    }
    write_results(NAME, payload, _markdown(payload), results_dir)
    return payload


def _markdown(payload: dict[str, Any]) -> str:
    from inspection.bench.report import markdown_table

    cfg = payload["config"]
    lines = [
        f"{cfg['stations']} simulated stations (separate processes, the real station runtime "
        f"with a fake fast scorer) at {cfg['fps']:g} frames/s each for {cfg['duration_s']:g} s "
        "per run, writing to one local durable PostgreSQL (temporary cluster, fsync on). "
        "`p*_write_ms`: per result, the time its batch took to become durable (database "
        "commit, or spool fsync while the database is down). `p99_end_to_end_ms`: capture -> "
        "durable, worst station. Load average at the end: "
        f"{', '.join(f'{x:.2f}' for x in payload['load_average'])}.",
        "",
        markdown_table(payload["runs"], COLUMNS),
        "",
    ]
    for run_ in payload["runs"]:
        if run_["events"]:
            lines.append(f"Events of run `{run_['name']}` (seconds after the cameras started):")
            lines.append("")
            for e in run_["events"]:
                extra = {k: v for k, v in e.items() if k not in ("t_s", "event")}
                lines.append(f"- {e['t_s']:.1f} s: {e['event']} {extra if extra else ''}")
            lines.append("")
    verdict = "produced == stored, no duplicates" if payload["ok"] else "FAILED: see runs"
    lines.append(f"Result: {verdict}.")
    return "\n".join(lines)


__all__ = ["COLUMNS", "LoadConfig", "PostgresControl", "run", "run_once", "station_main"]
