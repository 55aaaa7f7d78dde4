"""``inspection demo``: the README's first command, the whole loop on the embedded default.

By default it runs the example line (``stations/example-line``: two stations on synthetic line
cameras, first models trained on good parts and exported to OpenVINO) writing every result to
SQLite, and serves the review UI on localhost with demo logins, until Ctrl+C (or ``--duration``).

``--no-serve`` is the quick self-check instead: train a detector on the synthetic line, export
it, score a stream of new parts with the station runtime and print which it flags, writing
heatmap overlays to ``var/demo/``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer


def demo_command(
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Run the line + review UI."),
    duration: float | None = typer.Option(None, help="Stop after this many seconds."),
    host: str = typer.Option("127.0.0.1", help="Review UI address (localhost only by default)."),
    port: int = typer.Option(8000, help="Review UI port."),
    line: Path = typer.Option(Path("stations/example-line"), help="Station configs to run."),
    detector: str = typer.Option("padim", help="--no-serve: registry key of the detector."),
    family: str = typer.Option("disc", help="--no-serve: synthetic part family."),
    parts: int = typer.Option(40, help="--no-serve: parts to inspect after training."),
    workdir: Path = typer.Option(Path("var/demo"), help="--no-serve: model and overlays."),
) -> None:
    """Run the example line writing to SQLite with the review UI on localhost."""
    if not serve:
        quick_demo(detector, family, parts, workdir)
        return
    run_line_with_ui(line, host=host, port=port, duration=duration)


@contextmanager
def stop_on_signals(stop: threading.Event, say: Any = print) -> Iterator[threading.Event]:
    """SIGINT (Ctrl+C) and SIGTERM set ``stop`` (a graceful stop: capture ends, everything
    captured is scored and stored, the database is closed); a second signal interrupts at once.
    The previous handlers come back on exit. Outside the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        say(f"{signal.Signals(signum).name}: stopping, finishing captured parts (again: at once)")
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_line_with_ui(line: Path, *, host: str, port: int, duration: float | None) -> None:
    """Migrate the database, seed demo logins, serve the UI and run every station of ``line``.

    Ctrl+C and SIGTERM stop it the same graceful way (:func:`stop_on_signals`).
    """
    from rich.console import Console

    from inspection.api.server import start_in_thread
    from inspection.api.settings import ApiSettings
    from inspection.db.engine import make_engine, make_session_factory
    from inspection.db.settings import get_settings
    from inspection.services.users import demo_accounts_text, seed_demo_users
    from inspection.station.config import load_line
    from inspection.station.runner import run_stations

    console = Console()
    url = get_settings().database_url
    configs = load_line(line)
    artifact_root = Path(configs[0].artifacts_dir) if configs else Path("var/artifacts")
    settings = ApiSettings(database_url=url, artifact_root=artifact_root, auto_migrate=True)
    stop = threading.Event()
    with start_in_thread(settings, host=host, port=port) as server:
        engine = make_engine(url)
        with make_session_factory(engine)() as session:
            accounts = seed_demo_users(session)
            session.commit()
        engine.dispose()
        console.print(demo_accounts_text(accounts))
        console.print(
            f"review UI: [bold]{server.url}[/]  (stations: {', '.join(c.id for c in configs)}; "
            "first start trains their models, a minute or two; Ctrl+C stops)"
        )
        try:
            with stop_on_signals(stop, console.print):
                results = run_stations(
                    configs, db_url=url, init_db=True, duration_s=duration, stop=stop
                )
        except KeyboardInterrupt:  # a second Ctrl+C: the stations were stopped on the way out
            stop.set()
            results = {}
    for station_id, stats in results.items():
        counters = stats.get("counters", stats)
        console.print(f"{station_id}: {counters}")


def quick_demo(detector: str, family: str, parts: int, workdir: Path) -> None:
    """Train on the synthetic line, export to OpenVINO and flag defective parts."""
    from inspection.extras import require_extra

    require_extra("inspection demo --no-serve (trains a detector)")
    import cv2
    import numpy as np
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from inspection import training
    from inspection.bench.figures import overlay
    from inspection.data.synthetic import SyntheticLine, image_set
    from inspection.detectors import registry
    from inspection.runtime import OpenVinoModel

    console = Console()
    line = SyntheticLine(family=family, size=256, seed=0, defect_rate=0.3)
    normals = line.normals(200)
    train_set = image_set(normals)
    det = registry.create(detector)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task(f"training {detector}", total=1)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(
                task, description=f"{detector}: {stage}", completed=done, total=max(total, 1)
            )

        trained = training.train(det, train_set, progress=progress)
    bundle = training.export_openvino(trained, workdir / "model")
    console.print(f"model exported to [bold]{bundle}[/] (OpenVINO IR + model.json)")

    model = OpenVinoModel(bundle)
    stream = [line.sample(10_000 + i) for i in range(parts)]
    table = Table(title=f"synthetic {family} line, {detector}")
    for col in ("part", "truth", "score", "verdict"):
        table.add_column(col)
    hits = correct = 0
    overlays = workdir / "overlays"
    overlays.mkdir(parents=True, exist_ok=True)
    for sample in stream:
        pred = model.predict(sample.image[None])
        flagged = bool(pred.is_anomalous[0])
        truth = sample.defect_type or "good"
        correct += flagged == sample.is_anomalous
        hits += flagged and sample.is_anomalous
        verdict = "[red]FAIL[/]" if flagged else "[green]pass[/]"
        table.add_row(str(sample.index), truth, f"{pred.score[0]:.2f}", verdict)
        if flagged or sample.is_anomalous:
            vis = overlay(
                sample.image,
                pred.anomaly_map[0],
                model.pixel_threshold * 0.5,
                float(np.max(pred.anomaly_map)),
            )
            cv2.imwrite(str(overlays / f"part{sample.index}_{truth}.png"), vis[..., ::-1])
    console.print(table)
    n_def = sum(s.is_anomalous for s in stream)
    console.print(
        f"flagged {hits}/{n_def} defective parts; {correct}/{len(stream)} verdicts right; "
        f"heatmap overlays in [bold]{overlays}[/]"
    )
