"""``inspection train``: a detector from a plant's own normal images, as a station bundle.

The engineer's first step on a new line: photograph good parts, point this command at the
folder, get a self-contained bundle (OpenVINO IR + ``model.json`` with preprocessing,
normalisation and thresholds from held-out normal images) for ``detector.path`` of a station
config. With an MVTec-layout folder (``train/good``, ``test/<type>``, ``ground_truth``) it also
evaluates on the test images and draws ROC/PRO curves, score histogram and heatmap overlays.

``--fit`` says how images become the model's square input (:mod:`inspection.geometry`):
``stretch`` resizes, ``pad`` letterboxes (keeps the aspect ratio: long, narrow parts), ``auto``
(default) pads when the normal images are far from square or vary in shape. The bundle records
the fit and the station applies it to its frames.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast, get_args

import typer


def _read_config(path: Path) -> dict[str, Any]:
    import yaml

    from inspection.errors import ConfigError

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read detector config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of detector settings")
    return data


def train_command(
    images: Path = typer.Argument(
        ...,
        help="Folder of normal images (subfolders too), or an MVTec-layout root (train/good, test/).",
    ),
    detector: str = typer.Option(
        "auto",
        "--detector",
        "-d",
        help="Registry key, or 'auto': train padim and patchcore (256 and 320 px) and keep the "
        "one that finds subtle painted defects on held-out normal images best.",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Bundle folder to write (must be new or empty)."
    ),
    config: Path | None = typer.Option(
        None, "--config", help="YAML of detector settings (unknown keys are errors)."
    ),
    size: int | None = typer.Option(None, help="Model input side in px (default: the detector's)."),
    precision: str = typer.Option("fp32", help="fp32, fp16 or int8 (int8: thresholds re-set)."),
    val_fraction: float = typer.Option(0.15, help="Normal images held out for the thresholds."),
    quantile: float = typer.Option(
        0.99, help="Image threshold = this quantile of held-out scores."
    ),
    fit: str = typer.Option(
        "auto",
        "--fit",
        help="auto, stretch or pad: how images become the square input (auto: pad when the "
        "normal images are far from square or vary in shape).",
    ),
    quick: bool = typer.Option(False, "--quick", help="Tiny settings for a smoke test (64 px)."),
    evaluate: bool = typer.Option(True, help="Evaluate on test/ of an MVTec-layout root."),
) -> None:
    """Train a detector on normal images and export a station bundle."""
    from inspection.extras import require_extra

    require_extra("inspection train")  # before torch: the lean install says which extra to add
    from rich.console import Console

    from inspection import training
    from inspection.data.folder import load_mvtec_folder, load_normal_folder
    from inspection.detectors import registry
    from inspection.errors import InspectionError, UnknownDetectorError
    from inspection.geometry import check_fit_choice

    console = Console(stderr=True)
    if precision not in get_args(training.Precision):
        raise typer.BadParameter(f"precision {precision!r}: use fp32, fp16 or int8")
    try:
        fit_arg = check_fit_choice(fit)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise typer.BadParameter(f"{out} exists and is not empty; choose a new folder")
    auto = detector == "auto"
    if auto and (config is not None or size is not None):
        raise typer.BadParameter("--config/--size need -d DETECTOR")
    try:
        cls = None if auto else registry.get(detector)
    except UnknownDetectorError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        if cls is None:
            load_size = training.QUICK_AUTO_LOAD_SIZE if quick else training.AUTO_LOAD_SIZE
            seed = 0
        else:
            cfg = _detector_config(cls, detector, quick=quick, config=config, size=size)
            load_size, seed = cfg.image_size, cfg.seed
        mvtec = (images / "train" / "good").is_dir()
        test = None
        if mvtec:
            normals, test = load_mvtec_folder(images, load_size, fit_arg)
        else:
            normals = load_normal_folder(images, load_size, fit_arg)
        console.print(f"{len(normals)} normal images from {images} at {load_size} px")
        how = "chosen from the images' shapes" if fit == "auto" else "as asked"
        console.print(f"fit: {normals.fit} ({how})")
        with _progress_bar(console) as progress:
            if cls is None:
                trained = training.train_auto(
                    normals, val_fraction, quantile, progress, seed=seed, quick=quick
                )
            else:
                trained = training.train(cls(cfg), normals, val_fraction, quantile, progress)
            chosen_size = trained.detector.config.image_size
            _, val = training.split_validation(normals, val_fraction, seed)
            bundle = training.export_openvino(
                trained,
                out,
                cast(training.Precision, precision),
                val.resized(chosen_size).images if precision == "int8" else None,
            )
            report = None
            if mvtec and evaluate and test is not None:
                report = _evaluate(trained, test.resized(chosen_size), bundle, progress)
    except (InspectionError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    _print_summary(console, trained, bundle, quantile, report)


@contextmanager
def _progress_bar(console: Any) -> Iterator[Callable[[str, int, int], None]]:
    """A ``progress(stage, done, total)`` callback drawing one bar per stage."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            key = stage.split(" (", maxsplit=1)[0]
            if key not in tasks:
                tasks[key] = bar.add_task(stage, total=max(total, 1))
            bar.update(tasks[key], completed=done, total=max(total, 1), description=stage)

        yield progress


def _detector_config(
    cls: Any, detector: str, *, quick: bool, config: Path | None, size: int | None
) -> Any:
    """The detector's settings: its defaults (or quick ones), a YAML file's, ``--size``.

    Raises:
        ConfigError: the settings do not validate.
    """
    from pydantic import ValidationError

    from inspection.errors import ConfigError

    settings = (cls.quick_config() if quick else cls.Config(type=detector)).model_dump()
    if config is not None:
        settings.update(_read_config(config))
    if size is not None:
        settings["image_size"] = size
    try:
        return cls.Config.model_validate(settings)
    except ValidationError as exc:
        raise ConfigError(f"detector settings for {detector}: {exc}") from None


def _print_summary(
    console: Any, trained: Any, bundle: Path, quantile: float, report: dict[str, Any] | None
) -> None:
    """What was trained, its threshold and choices, the evaluation and the bundle's path."""
    cal = json.loads((bundle / "model.json").read_text())["calibration"]
    if trained.auto_selection:
        auto_sel = trained.auto_selection
        console.print(f"detector auto: {auto_sel['reason']}")
    for warning in trained.warnings:
        console.print(f"[bold yellow]warning:[/] {warning}")
    console.print(
        f"[green]{trained.detector.key}[/] fitted on {trained.n_train} images in {trained.fit_seconds:.0f} s; "
        f"image threshold {cal['image_threshold']:.4g} (quantile {quantile} of "
        f"{trained.n_val} held-out normals)"
    )
    if trained.score_selection:
        sel = trained.score_selection
        console.print(f"score mode {sel['chosen']} (synthetic-defect AUROC {sel['auroc']})")
    if trained.epoch_selection:
        ep = trained.epoch_selection
        console.print(
            f"kept epoch {ep['chosen_epoch']} of {ep['epochs_run']} run (best on synthetic "
            "defects painted onto held-out normals)"
        )
    if report:
        console.print(f"evaluation on test/: {report}")
    console.print(f"bundle: {bundle}\nstation config:\n  detector:\n    path: {bundle}")


def _evaluate(trained: Any, test: Any, bundle: Path, progress: Any) -> dict[str, Any]:
    """Metrics on the test set (written to ``<bundle>/evaluation.json``) and figures beside it."""
    from inspection import evaluation
    from inspection.bench import figures

    det = trained.detector
    out = det.predict(test.images, progress)
    metrics = evaluation.evaluate(out.score, out.anomaly_map, test, trained.calibration)
    summary = {k: metrics[k] for k in ("image_auroc", "pixel_auroc", "aupro", "image_f1")}
    (bundle / "evaluation.json").write_text(json.dumps(metrics, indent=2, default=float))
    figures.evaluation_figures(
        bundle / "report",
        det.key,
        f"{det.key}: image AUROC {metrics['image_auroc']:.3f}",
        out.score,
        out.anomaly_map,
        test,
        trained.calibration,
    )
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()}
