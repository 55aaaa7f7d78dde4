"""``inspection bench ...``: commands that measure speed and accuracy and commit the numbers."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="Benchmarks: results go to bench/results/<name>.json and .md.", no_args_is_help=True
)


@app.command("detectors")
def detectors(
    protocol: str = typer.Option(
        "mt-exp", help="mt-exp, mvtec (any MVTec-layout folder) or synthetic-quick."
    ),
    data: Path | None = typer.Option(None, help="Data root, e.g. ../shared/data/magnetic_tile."),
    detectors: str = typer.Option("", help="Comma-separated registry keys (default: all)."),
    quick: bool = typer.Option(
        False, "--quick", help="Tiny synthetic run (CI): protocol synthetic-quick."
    ),
    results_dir: Path = typer.Option(Path("bench/results"), help="Where results are written."),
) -> None:
    """Fit, calibrate, evaluate, export and time every detector on one protocol."""
    from rich.console import Console

    from inspection.bench import detectors as bench
    from inspection.bench.report import markdown_table
    from inspection.detectors import registry

    keys = [k.strip() for k in detectors.split(",") if k.strip()] or registry.keys()
    for key in keys:
        registry.get(key)  # fail fast on unknown keys
    if quick:
        protocol = bench.QUICK_PROTOCOL
    if protocol == "mvtec" and data is not None:
        name = f"mvtec-{data.resolve().name}"
    else:
        name = protocol
    payload = bench.run(keys, protocol, data, quick=quick, results_dir=results_dir, name=name)
    rows = [{"detector": k, **v} for k, v in payload["detectors"].items() if k in keys]
    Console().print(markdown_table(rows, bench.COLUMNS))
