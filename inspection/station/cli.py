"""``inspection station``: run one station, run a whole line, or check station configs.

The database URL comes from ``--db`` or ``INSPECTION_DATABASE_URL`` (default
``sqlite:///var/inspection.db``) and is only printed with its password masked. Ctrl-C (or
SIGTERM) stops the stations gracefully: capture stops, everything captured is scored and stored.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Station runtime: camera -> OpenVINO -> thresholds -> typing -> database.",
    no_args_is_help=True,
    # Tracebacks with locals would print the database URL and camera credentials.
    pretty_exceptions_show_locals=False,
)
console = Console()

_DB = typer.Option(
    None,
    "--db",
    help="Database URL (default: INSPECTION_DATABASE_URL or sqlite:///var/inspection.db).",
)
_MAX = typer.Option(None, "--max-frames", min=1, help="Stop each station after N frames.")
_DURATION = typer.Option(None, "--duration", min=0.0, help="Stop after S seconds.")
_INIT = typer.Option(False, "--init-db", help="Create/upgrade the database schema first.")
_BOOT = typer.Option(True, "--bootstrap/--no-bootstrap", help="Train first models when missing.")


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        console.print("stopping: finishing captured frames ...")
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
    return stop


def _report(results: dict[str, dict[str, Any]]) -> None:
    table = Table(title="stations")
    cols = ("captured", "scored", "persisted", "dropped", "bad_frames", "anomalous")
    heads = ("station", "capt", "scored", "stored", "drop", "bad", "fail", "fps", "p99 ms")
    for col in heads:
        table.add_column(col, justify="left" if col == "station" else "right")
    for sid, stats in results.items():
        c = stats["counters"]
        verdict = stats["latency_ms"].get("verdict", {})
        table.add_row(
            sid,
            *(str(c.get(k, 0)) for k in cols),
            f"{stats['scored_per_second']:.1f}",
            f"{verdict.get('p99', float('nan')):.0f}",
        )
    console.print(table)
    for sid, stats in results.items():
        c = stats["counters"]
        extra = {k: c[k] for k in ("reconnects", "persist_failures", "persist_retries") if c.get(k)}
        if extra:
            console.print(f"{sid}: {extra}")


def _fail(exc: Exception) -> typer.Exit:
    from rich.markup import escape

    from inspection.errors import MissingExtraError
    from inspection.extras import EXIT_MISSING_EXTRA

    console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
    return typer.Exit(code=EXIT_MISSING_EXTRA if isinstance(exc, MissingExtraError) else 1)


def _start(
    runner: Callable[..., Any],
    target: Path,
    db: str | None,
    max_frames: int | None,
    duration: float | None,
    init_db: bool,
    bootstrap: bool,
) -> Any:
    """``runner(target, ...)`` with the options ``run`` and ``run-line`` share, stopped by
    Ctrl-C or SIGTERM; an expected error ends the command with its message, not a traceback."""
    from inspection.errors import InspectionError

    try:
        return runner(
            target,
            db_url=db,
            init_db=init_db,
            max_frames=max_frames,
            duration_s=duration,
            stop=_stop_on_signals(),
            bootstrap=bootstrap,
        )
    except InspectionError as exc:
        raise _fail(exc) from None


@app.command("run")
def run(
    config: Path = typer.Argument(
        ..., help="Station file, e.g. stations/example-line/station-a.yaml."
    ),
    db: str | None = _DB,
    max_frames: int | None = _MAX,
    duration: float | None = _DURATION,
    init_db: bool = _INIT,
    bootstrap: bool = _BOOT,
) -> None:
    """Run one station until its camera ends, --max-frames, --duration or Ctrl-C."""
    from inspection.station.runner import run_station_file

    stats = _start(run_station_file, config, db, max_frames, duration, init_db, bootstrap)
    _report({stats["station"]: stats})


@app.command("run-line")
def run_line(
    line: Path = typer.Argument(..., help="Line folder, e.g. stations/example-line/."),
    db: str | None = _DB,
    max_frames: int | None = _MAX,
    duration: float | None = _DURATION,
    init_db: bool = _INIT,
    bootstrap: bool = _BOOT,
) -> None:
    """Run every station of a line in this process until --max-frames, --duration or Ctrl-C."""
    from inspection.station.runner import run_line as run_line_

    _report(_start(run_line_, line, db, max_frames, duration, init_db, bootstrap))


@app.command("check")
def check(
    paths: list[Path] = typer.Argument(..., help="Station files or line folders."),
) -> None:
    """Validate station configs (unknown keys, bad values, cron schedules)."""
    from inspection.errors import ConfigError
    from inspection.station.config import load_line, load_station_config

    failed = False
    for path in paths:
        try:
            configs = load_line(path) if path.is_dir() else [load_station_config(path)]
        except ConfigError as exc:
            console.print(f"[red]invalid:[/red] {exc}", soft_wrap=True)
            failed = True
            continue
        for cfg in configs:
            console.print(f"[green]ok[/green] {cfg.id} (line {cfg.line}, camera {cfg.camera.type})")
    if failed:
        raise typer.Exit(code=1)
