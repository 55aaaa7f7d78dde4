"""``inspection bench ...``: commands that measure speed and accuracy and commit the numbers."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="Benchmarks: results go to bench/results/<name>.json and .md.", no_args_is_help=True
)


@app.callback()
def _needs_train_extra() -> None:
    """Benchmarks train and export models: they need the ``train`` extra (torch)."""
    from inspection.extras import require_extra

    require_extra("inspection bench")


#: ``--results-dir`` of every benchmark.
_RESULTS_DIR = typer.Option(Path("bench/results"), help="Where results are written.")


def _items(text: str) -> list[str]:
    """A comma-separated option's items, stripped, empty ones left out."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _detector_keys(text: str) -> list[str]:
    """The registry keys of a ``--detectors`` option (empty: every detector); an unknown key
    fails before any work starts."""
    from inspection.detectors import registry

    keys = _items(text) or registry.keys()
    for key in keys:
        registry.get(key)
    return keys


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
    results_dir: Path = _RESULTS_DIR,
) -> None:
    """Fit, calibrate, evaluate, export and time every detector on one protocol."""
    from rich.console import Console

    from inspection.bench import detectors as bench
    from inspection.bench.report import markdown_table

    keys = _detector_keys(detectors)
    if quick:
        protocol = bench.QUICK_PROTOCOL
    if protocol == "mvtec" and data is not None:
        name = f"mvtec-{data.resolve().name}"
    else:
        name = protocol
    payload = bench.run(keys, protocol, data, quick=quick, results_dir=results_dir, name=name)
    rows = [{"detector": k, **v} for k, v in payload["detectors"].items() if k in keys]
    Console().print(markdown_table(rows, bench.COLUMNS))


@app.command("suite")
def suite(
    data_root: Path = typer.Option(
        Path("../shared/data"), help="Folder holding magnetic_tile/, elpv_solar/, mvtec_screw/."
    ),
    detectors: str = typer.Option(
        "",
        help="Comma-separated registry keys and/or 'auto' (default: every registry key, plus "
        "auto when inspection.training.train_auto exists).",
    ),
    datasets: str = typer.Option(
        "",
        help="Comma-separated: mt-exp, elpv_solar, mvtec_screw (default: all; with --quick: "
        "synthetic-disc, synthetic-tile).",
    ),
    quick: bool = typer.Option(
        False, "--quick", help="Tiny synthetic stand-in (CI): suite-quick.json, quick configs."
    ),
    fit: str = typer.Option(
        "auto",
        "--fit",
        help="auto, stretch or pad for every set (auto: the geometry `inspection train` gives "
        "the set by default; each row records its fit).",
    ),
    results_dir: Path = _RESULTS_DIR,
    bundles_dir: Path | None = typer.Option(
        None,
        help="Where each cell's exported bundle is kept for --retime "
        "(default: ~/.cache/inspection/bench-bundles/<protocol>).",
    ),
    retime: bool = typer.Option(
        False,
        "--retime",
        help="Train nothing: time the kept bundles of suite.json's rows again (on a quiet "
        "machine) and rewrite suite.json/.md with the new times and load averages.",
    ),
) -> None:
    """Protocol suite: every detector on every data set, same settings -> suite.json/.md."""
    from rich.console import Console

    from inspection.bench import suite as bench
    from inspection.bench.report import markdown_table
    from inspection.bench.retime import default_bundles_dir, retime_suite
    from inspection.detectors import registry
    from inspection.errors import ConfigError
    from inspection.geometry import check_fit_choice

    if retime:
        try:
            done = retime_suite(results_dir, bundles_dir, quick)
        except ConfigError as exc:
            raise typer.BadParameter(str(exc), param_hint="--results-dir") from exc
        Console().print(f"re-timed {len(done)} cells: " + ", ".join(f"{n}/{k}" for n, k in done))
        return

    try:
        fit_arg = check_fit_choice(fit)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--fit") from exc
    keys = _items(detectors) or bench.default_keys()
    try:
        for key in keys:
            if key != bench.AUTO:
                registry.get(key)  # fail fast on unknown keys
    except (ConfigError, KeyError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--detectors") from exc
    names = _items(datasets) or None
    specs = bench.dataset_specs(quick)
    for name in names or []:
        if name not in specs:
            raise typer.BadParameter(
                f"unknown data set {name!r}; one of: {', '.join(specs)}", param_hint="--datasets"
            )
    console = Console()
    protocol = bench.QUICK_PROTOCOL if quick else bench.PROTOCOL
    result = bench.run(
        keys,
        names,
        data_root,
        quick=quick,
        results_dir=results_dir,
        bundles_dir=bundles_dir or default_bundles_dir(protocol),
        fit=fit_arg,
    )
    for name, why in result.skipped.items():
        console.print(f"[yellow]skipped {name}:[/yellow] {why}")
    if result.payload:
        rows = [{"detector": k, **v} for k, v in result.payload["summary"].items()]
        console.print(
            markdown_table(
                rows, ["detector", "mean_image_auroc", "worst_image_auroc", "n_datasets"]
            )
        )
    for cell, error in result.failed.items():
        console.print(f"[red]{cell} failed:[/red] {error}")
    if result.failed:
        raise typer.Exit(code=1)


@app.command("db")
def db(
    n: int = typer.Option(100_000, "--n", help="Inspections to insert per engine."),
    batch_size: int = typer.Option(200, help="Inspections per transaction in the bulk insert."),
    single_commit: int = typer.Option(2_000, help="Inspections inserted one transaction each."),
    queries: int = typer.Option(200, help="Repetitions of each timed query."),
    engines: str = typer.Option("sqlite,postgresql", help="Comma-separated: sqlite, postgresql."),
    results_dir: Path = _RESULTS_DIR,
) -> None:
    """Insert and query inspections (regions, labels) on SQLite and PostgreSQL: db.json/.md."""
    from rich.console import Console

    from inspection.bench import db_bench
    from inspection.bench.report import markdown_table

    config = db_bench.BenchConfig(
        n_inspections=n, batch_size=batch_size, n_single_commit=single_commit, n_queries=queries
    )
    chosen = tuple(_items(engines))
    payload = db_bench.run(config, engines=chosen, results_dir=results_dir)
    Console().print(markdown_table(list(payload["engines"].values()), db_bench.COLUMNS))
    for engine, reason in payload["skipped"].items():
        Console().print(f"skipped {engine}: {reason}")


@app.command("openset")
def openset(
    protocol: str = typer.Option("mt-open", help="Open-set typing protocol: mt-open or neu-open."),
    data: Path | None = typer.Option(
        None,
        help="Data root of the protocol (default ../shared/data/magnetic_tile for mt-open, "
        "../shared/data/neu_surface for neu-open).",
    ),
    methods: str = typer.Option(
        "",
        help="Comma-separated: msp,max_logit,energy,mahalanobis,metric,openmax,knn (default all).",
    ),
    results_dir: Path = _RESULTS_DIR,
    cache_dir: Path = typer.Option(
        Path("runs/typing-cache"), help="Backbone-feature cache (gitignored)."
    ),
) -> None:
    """Open-set defect typing: every method on one network per fold -> <protocol>.json/.md."""
    from rich.console import Console

    from inspection.bench import openset_bench as bench
    from inspection.bench.report import markdown_table
    from inspection.openset.config import METHODS
    from inspection.progress_bar import stage_progress

    if protocol not in bench.PROTOCOLS:
        raise typer.BadParameter(
            f"unknown protocol {protocol!r}; expected one of {bench.PROTOCOLS}"
        )
    default_data = {"mt-open": "magnetic_tile", "neu-open": "neu_surface"}[protocol]
    root = data if data is not None else Path("../shared/data") / default_data
    chosen = _items(methods) or list(METHODS)
    with stage_progress() as progress:
        payload = bench.run(
            root,
            methods=chosen,
            results_dir=results_dir,
            cache_dir=cache_dir,
            progress=progress,
            protocol=protocol,
        )
    rows = [{"method": m, **payload["methods"][m]} for m in chosen]
    Console().print(markdown_table(rows, bench.COLUMNS))


@app.command("station")
def station(
    detectors: str = typer.Option("", help="Comma-separated registry keys (default: all)."),
    size: int = typer.Option(256, help="Camera and model side in pixels."),
    frames: int = typer.Option(600, help="Frames per station run."),
    normals: int = typer.Option(100, help="Good synthetic parts each detector trains on."),
    variants: str = typer.Option(
        "1:auto:1,4:auto:1,1:1:1,1:1:2,1:auto:2:throughput,1:auto:2:throughput:1,"
        "1:auto:3:throughput,4:auto:2:throughput",
        help="Station settings to compare, batch:threads:workers[:latency|throughput[:requests]] "
        "(threads 'auto': all cores; throughput: parallel OpenVINO streams; requests in flight "
        "per worker, default 2).",
    ),
    precisions: str = typer.Option("fp32,fp16,int8", help="Export precisions to compare."),
    camera_fps: float = typer.Option(60.0, help="Camera rate of the paced run."),
    pairs: int = typer.Option(
        5,
        min=0,
        help="Interleaved station/anomalib pairs on each detector's fastest variant (0: none).",
    ),
    defaults_pairs: int = typer.Option(
        5,
        min=0,
        help="Back-to-back pairs of the station at its default settings (a process alone) and "
        "anomalib's inferencer at its defaults, plus start times and memory (0: none).",
    ),
    only_defaults: bool = typer.Option(
        False, "--only-defaults", help="Only the defaults section (no variants, precisions)."
    ),
    lean_python: str = typer.Option(
        "", help="The lean install's interpreter, for lean_install_mb (empty: not measured)."
    ),
    start_repeats: int = typer.Option(3, min=1, help="Starts of each kind per detector."),
    name: str = typer.Option("station", help="Results file name."),
    quick: bool = typer.Option(False, "--quick", help="Quick configs (tiny training)."),
    reuse: bool = typer.Option(True, "--reuse/--retrain", help="Reuse bundles of earlier runs."),
    workdir: Path = typer.Option(
        Path("var/bench/station"), help="Bundles and scratch (gitignored)."
    ),
    results_dir: Path = _RESULTS_DIR,
) -> None:
    """Station runtime end to end per detector (frames/s, latency, drops, vs anomalib), and the
    station at its default settings against anomalib at its defaults."""
    from rich.console import Console

    from inspection.bench import station_bench as bench
    from inspection.bench.report import markdown_table
    from inspection.bench.station_report import COLUMNS, DEFAULTS_COLUMNS

    keys = _detector_keys(detectors)
    console = Console()
    payload = bench.run(
        keys,
        size=size,
        frames=frames,
        normals=normals,
        variants=[bench.Variant.parse(v) for v in _items(variants)],
        precisions=_items(precisions),
        camera_fps=camera_fps,
        workdir=workdir,
        results_dir=results_dir,
        quick=quick,
        reuse=reuse,
        pairs=pairs,
        progress=console.print,
        defaults_pairs=defaults_pairs,
        only_defaults=only_defaults,
        lean_python=lean_python or None,
        start_repeats=start_repeats,
        name=name,
    )
    if payload["runs"]:
        console.print(markdown_table(payload["runs"], COLUMNS))
    if payload["defaults"]:
        rows = [{"detector": k, **v} for k, v in payload["defaults"].items()]
        console.print(markdown_table(rows, DEFAULTS_COLUMNS))
    for p in payload.get("paired", []):
        console.print(
            f"{p['detector']} {p['variant']}: median {p['median_speedup_vs_anomalib']:.2f}x "
            f"anomalib over {p['pairs']} back-to-back pairs "
            f"({p['min_speedup']:.2f}-{p['max_speedup']:.2f})"
        )
    for key, error in payload.get("errors", {}).items():
        console.print(f"[red]{key} failed:[/red] {error}")


@app.command("ui")
def ui(
    n_inspections: int = typer.Option(100_000, help="Inspections in the database."),
    n_requests: int = typer.Option(200, help="Measured requests per target."),
    results_dir: Path = _RESULTS_DIR,
) -> None:
    """Review UI: queue and detail pages (and their API) p95 latency with 100k inspections."""
    from rich.console import Console

    from inspection.bench import ui_bench
    from inspection.bench.report import markdown_table

    config = ui_bench.UiBenchConfig(n_inspections=n_inspections, n_requests=n_requests)
    payload = ui_bench.run(config, results_dir)
    Console().print(markdown_table(payload["results"], ui_bench.COLUMNS))
    if not payload["all_targets_met"]:
        Console().print(f"[red]p95 above {ui_bench.TARGET_P95_MS:.0f} ms on some targets[/red]")


@app.command("load")
def load(
    stations: int = typer.Option(8, help="Simulated stations (one process each)."),
    fps: float = typer.Option(10.0, help="Frames per second per station."),
    duration: float = typer.Option(600.0, help="Seconds per run."),
    outage: float = typer.Option(60.0, help="Seconds PostgreSQL stays down in the fault run."),
    faults: bool = typer.Option(True, "--faults/--no-faults", help="Also run the fault run."),
    normal: bool = typer.Option(True, "--normal/--no-normal", help="Run the fault-free run."),
    workdir: Path | None = typer.Option(
        None, help="Spools, artifacts, logs (default: a temporary folder, removed after)."
    ),
    results_dir: Path = _RESULTS_DIR,
) -> None:
    """Many stations, one PostgreSQL: produced vs stored, p99 write latency, faults survived."""
    from rich.console import Console

    from inspection.bench import load_bench
    from inspection.bench.report import markdown_table

    console = Console()
    config = load_bench.LoadConfig(
        stations=stations,
        fps=fps,
        duration_s=duration,
        outage_s=outage,
        faults=faults,
        normal=normal,
    )
    payload = load_bench.run(
        config, results_dir=results_dir, workdir=workdir, progress=console.print
    )
    console.print(markdown_table(payload["runs"], load_bench.COLUMNS))
    if not payload["ok"]:
        console.print("[red]results lost or duplicated: see the runs above[/red]")
        raise typer.Exit(code=1)


@app.command("loop")
def loop(
    protocol: str = typer.Option("mt-exp", help="Protocol (mt-exp)."),
    data: Path = typer.Option(
        Path("../shared/data/magnetic_tile"), help="Data root of the protocol."
    ),
    labels: str = typer.Option("25,50,100", help="Operator labels per cycle (comma-separated)."),
    seed: int = typer.Option(0, help="Seed of the stream/evaluation split."),
    novel: bool = typer.Option(
        True, "--novel/--no-novel", help="Leave-one-type-out unknown-type analysis."
    ),
    workdir: Path = typer.Option(
        Path("var/bench/loop"), help="Base model, score cache, cycle databases (gitignored)."
    ),
    results_dir: Path = _RESULTS_DIR,
) -> None:
    """Closed loop: label the first N flagged stream items, retrain, compare before/after."""
    from rich.console import Console

    from inspection.bench import loop_bench
    from inspection.bench.report import markdown_table
    from inspection.progress_bar import stage_progress

    if protocol != loop_bench.PROTOCOL:
        raise typer.BadParameter(f"unknown protocol {protocol!r}; expected {loop_bench.PROTOCOL}")
    counts = tuple(int(n) for n in _items(labels))
    console = Console()
    with stage_progress(console) as progress:
        payload = loop_bench.run(
            data,
            labels=counts,
            seed=seed,
            workdir=workdir,
            results_dir=results_dir,
            novel=novel,
            progress=progress,
        )
    console.print(markdown_table(payload["cycles"], loop_bench.COLUMNS))


@app.command("start")
def start(
    detectors: str = typer.Option("padim,cutpaste", help="Comma-separated registry keys."),
    python: str | None = typer.Option(
        None,
        help="Interpreter that runs the station (default: this one), e.g. a lean install's "
        "venv/bin/python.",
    ),
    size: int = typer.Option(256, help="Model side in pixels (bundles as `bench station`)."),
    repeats: int = typer.Option(3, min=1, help="Starts of each kind per detector."),
    workdir: Path = typer.Option(
        Path("var/bench/station"), help="Bundles (shared with `bench station`) and scratch."
    ),
    results_dir: Path = _RESULTS_DIR,
    name: str = typer.Option("station-lean", help="Results file name."),
    bundles_dir: Path | None = typer.Option(
        None,
        help="Measure the exported bundles <dir>/<detector>/ as they are (e.g. a suite's "
        "bench-bundles/suite/<dataset>) instead of training bundles.",
    ),
) -> None:
    """Station process start -> first stored result (cold/warm OpenVINO cache) and its RSS."""
    from rich.console import Console

    from inspection.bench import start_bench as bench
    from inspection.bench.report import markdown_table
    from inspection.detectors import registry

    keys = _items(detectors)
    for key in keys:
        registry.get(key)  # fail fast on unknown keys
    console = Console()
    payload = bench.run(
        keys,
        python=python,
        size=size,
        repeats=repeats,
        workdir=workdir,
        results_dir=results_dir,
        name=name,
        bundles_dir=bundles_dir,
        progress=console.print,
    )
    rows = [{"detector": k, **v} for k, v in payload["detectors"].items()]
    console.print(markdown_table(rows, bench.COLUMNS))
