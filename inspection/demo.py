"""``inspection demo``: the README's first command, on the embedded synthetic line.

Trains a detector on good parts from the synthetic line camera, exports it to OpenVINO,
then scores a fresh stream of parts with the station runtime and shows which it flags,
writing heatmap overlays to ``var/demo/``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

logger = logging.getLogger(__name__)


def demo_command(
    detector: str = typer.Option("padim", help="Registry key of the detector to train."),
    family: str = typer.Option("disc", help="Synthetic part family: disc, tile or pcb."),
    parts: int = typer.Option(40, help="Parts to inspect after training."),
    workdir: Path = typer.Option(Path("var/demo"), help="Where the model and overlays go."),
) -> None:
    """Train on the synthetic line, export to OpenVINO and flag defective parts."""
    import cv2
    import numpy as np
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from inspection import engine
    from inspection.bench.figures import overlay
    from inspection.data.imageset import from_samples
    from inspection.data.synthetic import SyntheticLine
    from inspection.detectors import registry
    from inspection.runtime import OpenVinoModel

    console = Console()
    line = SyntheticLine(family=family, size=256, seed=0, defect_rate=0.3)
    normals = line.normals(200)
    train_set = from_samples(
        [s.image for s in normals],
        [s.mask for s in normals],
        [None] * len(normals),
        [str(s.index) for s in normals],
    )
    det = registry.create(detector)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task(f"training {detector}", total=1)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(
                task, description=f"{detector}: {stage}", completed=done, total=max(total, 1)
            )

        trained = engine.train(det, train_set, progress=progress)
    bundle = engine.export_openvino(trained, workdir / "model")
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
