"""``inspection retrain ...`` and ``inspection scheduler run``: the closed loop from the shell.

``app`` holds two groups and is added to the root CLI without a name, so they appear as
top-level commands:

* ``inspection retrain --station X`` — retrain one station now (exit 0 done, 1 failed,
  2 another retrain of the station is running, 3 cancelled);
* ``inspection retrain rollback --station X [--to ID]`` — one-click rollback;
* ``inspection retrain cancel --station X`` / ``inspection retrain jobs --station X``;
* ``inspection scheduler run`` — the single-box scheduler (cron schedules of station configs).

The station config (region of interest, artifacts folder, synthetic bootstrap normals) is
found by id under ``--stations`` (default ``stations/``), or given with ``--config``.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(add_completion=False)
retrain_app = typer.Typer(
    help="Retrain a station from operator labels; roll back; cancel; list jobs.",
    invoke_without_command=True,
)
scheduler_app = typer.Typer(help="Scheduled retraining (cron schedules of station configs).")
app.add_typer(retrain_app, name="retrain")
app.add_typer(scheduler_app, name="scheduler")

EXIT_FAILED, EXIT_BUSY, EXIT_CANCELLED = 1, 2, 3


def find_station_config(station: str, stations_dir: Path) -> Any | None:
    """The config of station ``station`` among ``stations_dir``'s station files (None: absent).

    Raises:
        ConfigError: a matching file is invalid.
    """
    from inspection.station.config import DEFAULTS_NAME, load_station_config

    if not stations_dir.is_dir():
        return None
    for path in sorted(stations_dir.rglob("*.y*ml")):
        if path.name == DEFAULTS_NAME or path.suffix not in (".yaml", ".yml"):
            continue
        try:
            import yaml

            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("id") == station:
            return load_station_config(path)
    return None


def _station_config(station: str, config: Path | None, stations_dir: Path) -> Any | None:
    from inspection.station.config import load_station_config

    if config is not None:
        cfg = load_station_config(config)
        if cfg.id != station:
            raise typer.BadParameter(f"{config} configures station {cfg.id!r}, not {station!r}")
        return cfg
    return find_station_config(station, stations_dir)


def _open(db_url: str | None) -> tuple[Any, Any]:
    from inspection.db.engine import make_session_factory
    from inspection.station.runner import open_database

    engine, _ = open_database(db_url)
    return engine, make_session_factory(engine)


def _fail(exc: Exception, code: int = EXIT_FAILED) -> typer.Exit:
    from rich.console import Console

    Console(stderr=True).print(f"[red]error:[/red] {exc}")
    return typer.Exit(code)


@retrain_app.callback()
def retrain_command(
    ctx: typer.Context,
    station: str | None = typer.Option(None, "--station", help="Station id (name)."),
    config: Path | None = typer.Option(None, "--config", help="The station's YAML file."),
    stations_dir: Path = typer.Option(Path("stations"), "--stations", help="Station configs."),
    settings_file: Path | None = typer.Option(
        None, "--settings", help="Retrain settings YAML (gate, holdout, refiner, typer)."
    ),
    artifacts_dir: Path | None = typer.Option(
        None, help="Artifact store root (default: the station config's artifacts_dir)."
    ),
    job: int | None = typer.Option(None, "--job", help="Run this queued job (from the UI)."),
    db_url: str | None = typer.Option(None, "--db-url", help="Default: INSPECTION_DATABASE_URL."),
) -> None:
    """Retrain STATION now from its operator labels and promote the candidate if not worse."""
    if ctx.invoked_subcommand is not None:
        return
    if station is None:
        raise typer.BadParameter("give --station (or a subcommand: rollback, cancel, jobs)")
    from inspection.extras import require_extra

    require_extra("inspection retrain")
    from rich.console import Console

    from inspection.errors import InspectionError
    from inspection.loop.config import load_settings
    from inspection.loop.retrain import retrain
    from inspection.progress_bar import stage_progress
    from inspection.storage import LocalArtifactStore

    console = Console()
    try:
        cfg = _station_config(station, config, stations_dir)
        settings = load_settings(settings_file)
        root = artifacts_dir or (cfg.artifacts_dir if cfg is not None else Path("var/artifacts"))
        engine, factory = _open(db_url)
    except InspectionError as exc:
        raise _fail(exc) from None
    if cfg is None:
        console.print(f"no config for station {station} under {stations_dir}: no ROI assumed")
    cancelled = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: cancelled.set())
    try:
        with stage_progress(console) as progress:
            result = retrain(
                cfg if cfg is not None else station,
                session_factory=factory,
                store=LocalArtifactStore(root),
                settings=settings,
                job_id=job,
                actor="cli",
                progress=progress,
                cancel=cancelled.is_set,
            )
    except InspectionError as exc:
        raise _fail(exc) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        engine.dispose()
    console.print(
        f"station {result.station}: job {result.job_id} {result.status}"
        + (" — promoted" if result.promoted else "")
        + (
            f"; candidate version {result.candidate_version_id}"
            if result.candidate_version_id
            else ""
        )
        + f"\n{result.reason}"
    )
    codes = {"failed": EXIT_FAILED, "busy": EXIT_BUSY, "cancelled": EXIT_CANCELLED}
    if result.status in codes:
        raise typer.Exit(codes[result.status])


@retrain_app.command("rollback")
def rollback_command(
    station: str = typer.Option(..., "--station", help="Station id (name)."),
    to: int | None = typer.Option(None, "--to", help="Model version id (default: the previous)."),
    db_url: str | None = typer.Option(None, "--db-url", help="Default: INSPECTION_DATABASE_URL."),
) -> None:
    """Reactivate the station's previously active model (stations hot-reload it)."""
    from rich.console import Console

    from inspection.errors import InspectionError
    from inspection.loop.promotion import rollback

    try:
        engine, factory = _open(db_url)
        try:
            change = rollback(factory, station=station, actor="cli", to_version_id=to)
        finally:
            engine.dispose()
    except InspectionError as exc:
        raise _fail(exc) from None
    Console().print(
        f"station {change.station}: active model version {change.active_version_id} "
        f"(was {change.previous_version_id}) {change.artifact_path}"
    )


@retrain_app.command("cancel")
def cancel_command(
    station: str = typer.Option(..., "--station", help="Station id (name)."),
    db_url: str | None = typer.Option(None, "--db-url", help="Default: INSPECTION_DATABASE_URL."),
) -> None:
    """Ask the station's queued or running retrain jobs to stop (at the next stage)."""
    from rich.console import Console

    from inspection.db import repo
    from inspection.db.engine import run_in_transaction
    from inspection.errors import InspectionError
    from inspection.loop.jobs import request_cancel_station

    try:
        engine, factory = _open(db_url)
        try:
            ids = run_in_transaction(
                factory,
                lambda s: request_cancel_station(
                    s, station_id=repo.get_station_by_name(s, station).id, requested_by="cli"
                ),
            )
        finally:
            engine.dispose()
    except InspectionError as exc:
        raise _fail(exc) from None
    Console().print(f"cancel requested for jobs {ids}" if ids else "no queued or running job")


@retrain_app.command("jobs")
def jobs_command(
    station: str = typer.Option(..., "--station", help="Station id (name)."),
    limit: int = typer.Option(10, help="How many of the newest jobs."),
    db_url: str | None = typer.Option(None, "--db-url", help="Default: INSPECTION_DATABASE_URL."),
) -> None:
    """The station's newest retrain jobs: status, progress, gate decision."""
    from rich.console import Console
    from rich.table import Table
    from sqlalchemy import select

    from inspection.db import repo
    from inspection.db.models import RetrainJob
    from inspection.errors import InspectionError

    try:
        engine, factory = _open(db_url)
        try:
            with factory() as session:
                row = repo.get_station_by_name(session, station)
                jobs = list(
                    session.scalars(
                        select(RetrainJob)
                        .where(RetrainJob.station_id == row.id)
                        .order_by(RetrainJob.id.desc())
                        .limit(limit)
                    )
                )
        finally:
            engine.dispose()
    except InspectionError as exc:
        raise _fail(exc) from None
    table = Table("job", "status", "created", "progress", "promoted", "reason")
    for j in jobs:
        prog = j.metrics.get("progress") or {}
        gate = j.metrics.get("gate") or {}
        table.add_row(
            str(j.id),
            j.status.value,
            j.created_at.isoformat(timespec="seconds"),
            f"{prog.get('stage', '')} {prog.get('fraction', '')}",
            str(j.metrics.get("promoted", "")),
            str(gate.get("reason") or j.metrics.get("skipped") or j.error or ""),
        )
    Console().print(table)


@scheduler_app.command("run")
def scheduler_run(
    stations_dir: Path = typer.Option(
        Path("stations"), "--stations", help="Folder of station configs (searched recursively)."
    ),
    settings_file: Path | None = typer.Option(None, "--settings", help="Retrain settings YAML."),
    poll_s: float = typer.Option(30.0, "--poll", help="Seconds between schedule checks."),
    tz: str | None = typer.Option(None, help="Time zone of the cron schedules (default: local)."),
    once: bool = typer.Option(False, "--once", help="One tick (run what is due), then exit."),
    db_url: str | None = typer.Option(None, "--db-url", help="Default: INSPECTION_DATABASE_URL."),
) -> None:
    """Run the retraining scheduler on this box until SIGINT/SIGTERM."""
    from inspection.extras import require_extra

    require_extra("inspection scheduler (retrains stations)")
    from rich.console import Console

    from inspection.errors import InspectionError
    from inspection.loop.config import load_settings
    from inspection.loop.scheduler import Scheduler, SchedulerWorker
    from inspection.station.config import DEFAULTS_NAME, load_station_config

    console = Console()
    try:
        files = [p for p in sorted(stations_dir.rglob("*.yaml")) if p.name != DEFAULTS_NAME]
        configs = [load_station_config(p) for p in files]
        settings = load_settings(settings_file)
        engine, factory = _open(db_url)
    except InspectionError as exc:
        raise _fail(exc) from None
    scheduled = [c.id for c in configs if c.retrain.enabled and c.retrain.schedule]
    console.print(f"scheduler: {len(scheduled)} station(s) on a schedule: {', '.join(scheduled)}")
    scheduler = Scheduler(configs, session_factory=factory, settings=settings, tz=tz)
    try:
        if once:
            report = scheduler.tick()
            for r in report.results:
                console.print(f"{r.station}: job {r.job_id} {r.status} {r.reason}")
            for name, why in report.skipped.items():
                console.print(f"{name}: skipped ({why})")
            return
        worker = SchedulerWorker(scheduler, poll_s=poll_s)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        worker.start()
        while not stop.wait(0.5) and worker.alive:
            pass
        worker.stop()
        worker.join()
    finally:
        engine.dispose()
