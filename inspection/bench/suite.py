"""``inspection bench suite``: every detector on every data set of protocol ``suite``.

Protocol ``suite`` (``../shared/data/README.md``) judges one-class detectors across unlike parts
at once, with the same settings everywhere: ``mt-exp`` on ``magnetic_tile`` and the
MVTec-layout folders ``elpv_solar`` and ``mvtec_screw`` (train on ``train/good``, test on all
of ``test/``; image labels only, so pixel metrics are null there).

Every set is loaded with the geometry ``inspection train`` gives it by default (``fit="auto"``:
:func:`inspection.geometry.choose_fit` on the training images, so ``mt-exp``'s tiles of varying
aspect ratio are letterboxed and metrics are taken on each image's valid box); ``fit`` forces
``stretch`` or ``pad`` for every set, and each row records the fit it was measured with.

Each (data set, detector) cell runs in its own spawned process: train with
:func:`inspection.training.train` (or :func:`inspection.training.train_auto` for the key ``auto``),
score the test set, compute the metrics at 256 x 256 (anomaly maps of detectors at other input
sides resized bilinearly; masks read at 256), export to OpenVINO and time batch-1 inference.
Rows merge into ``<results_dir>/suite.json``, so a run may cover some detectors and data sets
and keep the other rows; every row keeps the commit and date it was measured at.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from inspection.bench.measure import run_in_child
from inspection.bench.report import (
    RESULTS_DIR,
    previous_section,
    stamp,
    write_results,
)
from inspection.errors import ConfigError

if TYPE_CHECKING:
    from inspection.data.imageset import ImageSet
    from inspection.geometry import Fit

logger = logging.getLogger(__name__)

PROTOCOL = "suite"
#: Protocol name of ``--quick`` runs (written to ``suite-quick.json``, never over real results).
QUICK_PROTOCOL = "suite-quick"
#: The key that trains with :func:`inspection.training.train_auto` instead of one registry key.
AUTO = "auto"
#: Side (pixels) at which every metric is computed, as in protocol ``mt-exp``.
METRIC_SIZE = 256
#: Side the synthetic ``--quick`` sets are rendered at before resizing to a detector's side.
QUICK_RENDER_SIZE = 256
DEFAULT_DATA_ROOT = Path("../shared/data")

_MT_CITATION = (
    'Magnetic-tile surface defects: Huang, Qiu, Yuan, "Surface defect saliency of magnetic '
    'tile", The Visual Computer 36 (2020), doi 10.1007/s00371-018-1588-5.'
)
_ELPV_CITATION = (
    "ELPV solar-cell electroluminescence images: Buerhop-Lutz, Deitsch, Maier, Gallwitz, "
    "Berger, Doll, Hauch, Camus, Brabec (ELPV dataset), CC BY-NC-SA 4.0 (non-commercial, "
    "attribution, share-alike); split as in `../shared/data/elpv_solar/README.md`."
)
_MVTEC_CITATION = (
    "MVTec AD (screw): Bergmann, Fauser, Sattlegger, Steger, CVPR 2019 / IJCV 2021, "
    "CC BY-NC-SA 4.0."
)


@dataclass(frozen=True)
class DatasetSpec:
    """One data set of the suite.

    Attributes:
        name: name in results and on the command line.
        kind: ``mt-exp`` (magnetic tile protocol), ``mvtec`` (MVTec-layout folder) or
            ``synthetic`` (``--quick`` stand-in).
        folder: folder under the data root (empty for synthetic sets).
        citation: data source to cite wherever its results are shown.
        family: synthetic part family (synthetic sets only).
        seed: synthetic line seed (synthetic sets only).
    """

    name: str
    kind: str
    folder: str
    citation: str
    family: str = ""
    seed: int = 0


DATASETS: dict[str, DatasetSpec] = {
    "mt-exp": DatasetSpec("mt-exp", "mt-exp", "magnetic_tile", _MT_CITATION),
    "elpv_solar": DatasetSpec("elpv_solar", "mvtec", "elpv_solar", _ELPV_CITATION),
    "mvtec_screw": DatasetSpec("mvtec_screw", "mvtec", "mvtec_screw", _MVTEC_CITATION),
}
_SYNTHETIC_CITATION = (
    "Synthetic line of `inspection.data.synthetic` (a CI stand-in, not data of the protocol)."
)
QUICK_DATASETS: dict[str, DatasetSpec] = {
    "synthetic-disc": DatasetSpec(
        "synthetic-disc", "synthetic", "", _SYNTHETIC_CITATION, "disc", 7
    ),
    "synthetic-tile": DatasetSpec(
        "synthetic-tile", "synthetic", "", _SYNTHETIC_CITATION, "tile", 11
    ),
}
#: Images per synthetic ``--quick`` set: train normals, test normals, test defects.
QUICK_COUNTS = (24, 8, 8)


def dataset_specs(quick: bool) -> dict[str, DatasetSpec]:
    """The data sets of a real (``suite``) or ``--quick`` run, in report order."""
    return QUICK_DATASETS if quick else DATASETS


def load_dataset(
    spec: DatasetSpec, data_root: Path, size: int, fit: Fit | Literal["auto"] = "auto"
) -> tuple[ImageSet, ImageSet]:
    """(train normals, test set) of one suite data set at side ``size`` (pixels), both with
    ``fit`` (``auto``: the product's choice from the training images' shapes; the synthetic
    stand-in is square and always stretched).

    Raises :class:`~inspection.errors.DatasetError` when the data are absent or malformed.
    """

    if spec.kind == "mt-exp":
        from inspection.data.magnetic_tile import mt_exp

        return mt_exp(data_root / spec.folder, size, fit)
    if spec.kind == "mvtec":
        from inspection.data.folder import load_mvtec_folder

        return load_mvtec_folder(data_root / spec.folder, size, fit)
    if spec.kind == "synthetic":
        from inspection.data.synthetic import SyntheticLine, image_set

        n_train, n_normal, n_defect = QUICK_COUNTS
        line = SyntheticLine(spec.family, size=QUICK_RENDER_SIZE, seed=spec.seed)
        test = line.normals(n_normal, start=1000) + line.defects(n_defect, start=2000)
        prefix = f"{spec.name}-"
        return (
            image_set(line.normals(n_train), prefix).resized(size),
            image_set(test, prefix).resized(size),
        )
    raise ValueError(f"unknown data set kind {spec.kind!r}")


def default_keys() -> list[str]:
    """Every registry key, plus ``auto``."""
    from inspection.detectors import registry

    return [*registry.keys(), AUTO]


def _jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays and other odd leaves made JSON-serialisable."""

    def default(obj: Any) -> Any:
        if isinstance(obj, np.generic | np.ndarray):
            return obj.tolist()
        if isinstance(obj, Path):
            return str(obj)
        return repr(obj)

    return json.loads(json.dumps(value, default=default))


def bench_cell(
    dataset: str,
    key: str,
    data_root: Path,
    quick: bool,
    figures_dir: Path | None,
    bundle_dir: Path | None = None,
    fit: Fit | Literal["auto"] = "auto",
) -> dict[str, Any]:
    """Train, evaluate, export and time detector ``key`` on one data set (a child's job).

    ``bundle_dir``: keep the exported bundle there (``inspection bench suite --retime`` times
    it again later). ``fit``: the geometry (:func:`load_dataset`). Returns the JSON row
    (without the commit/date stamp, which the parent adds).
    """
    from inspection import training
    from inspection.bench.measure import measure_trained, progress_logger

    spec = dataset_specs(quick)[dataset]
    progress = progress_logger(f"{dataset}/{key}")
    extra: dict[str, Any] = {}
    start = time.perf_counter()
    if key == AUTO:
        load_size = training.QUICK_AUTO_LOAD_SIZE if quick else training.AUTO_LOAD_SIZE
        train_set, test_set = load_dataset(spec, data_root, load_size, fit)
        trained = training.train_auto(train_set, progress=progress, quick=quick)
        selection = trained.auto_selection or {}
        extra["chosen"] = str(selection.get("chosen", trained.detector.key))
        extra["auto_selection"] = _jsonable(selection)
        extra["load_size"] = load_size
    else:
        from inspection.detectors import registry

        cls = registry.get(key)
        config = cls.quick_config() if quick else cls.Config(type=key)
        train_set, test_set = load_dataset(spec, data_root, config.image_size, fit)
        trained = training.train(cls(config), train_set, progress=progress)
    train_seconds = time.perf_counter() - start
    size = trained.detector.config.image_size
    if test_set.images.shape[1] == METRIC_SIZE:
        eval_set = test_set
    else:
        from inspection.geometry import check_fit

        # the fit already resolved for this set: no second look at the training images
        eval_set = load_dataset(spec, data_root, METRIC_SIZE, check_fit(test_set.fit))[1]
    m = measure_trained(
        trained,
        test_set.resized(size),
        eval_set,
        repeats=3 if quick else 30,
        progress=progress,
        per_type=not quick,  # per-type AUPRO at 256 px is most of a quick cell's time
        bundle_dir=bundle_dir,
    )
    if spec.kind == "mt-exp":
        from inspection.data.magnetic_tile import same_group_auroc

        extra["image_auroc_same_groups"] = same_group_auroc(
            m.scores, eval_set, m.calibration.image_threshold
        )
    if figures_dir is not None:
        _cell_figure(figures_dir / dataset / f"{key}_curves.png", dataset, key, m)
    row = dict(m.row)
    head = {k: row.pop(k) for k in ("image_auroc", "pixel_auroc", "aupro")}
    return {
        **head,
        "fit_seconds": row.pop("fit_seconds"),
        "openvino_ms_per_image": row.pop("openvino_ms_per_image"),
        "image_f1": row.pop("image_f1"),
        **extra,
        "detector": trained.detector.key,
        "input_size": size,
        "fit": test_set.fit,
        "metric_size": METRIC_SIZE,
        "train_seconds": round(train_seconds, 2),
        **row,
    }


def _cell_figure(path: Path, dataset: str, key: str, m: Any) -> None:
    """Image ROC, PRO curve (where masks exist) and score histogram of one cell."""
    from inspection import evaluation
    from inspection.bench import figures

    masks = m.eval_set.masks
    pro = evaluation.pro_curve(m.maps[:, 0], masks) if masks.any() else None
    figures.detector_report(
        path,
        f"{key} on {dataset}: image AUROC {m.row['image_auroc']:.3f}",
        evaluation.roc_curve(m.scores, m.eval_set.labels),
        pro,
        m.scores,
        m.eval_set.labels,
        m.calibration.image_threshold,
    )


@dataclass
class SuiteRun:
    """What one run did: the payload written (merged with earlier rows), what it skipped.

    Attributes:
        payload: the JSON written to ``<results_dir>/<protocol>.json`` (or the earlier one,
            unchanged, when nothing was measured).
        skipped: data set -> why it was not run (folder absent).
        failed: ``"<data set>/<key>"`` -> error of a cell whose child failed (earlier rows of
            that cell, if any, are kept).
        measured: ``(data set, key)`` cells measured by this run.
    """

    payload: dict[str, Any]
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    measured: list[tuple[str, str]] = field(default_factory=list)


def _previous_datasets(json_path: Path, protocol: str) -> dict[str, Any]:
    return previous_section(json_path, protocol, "datasets")


def _key_order(keys: set[str]) -> list[str]:
    from inspection.detectors import registry

    known = [*registry.keys(), AUTO]
    return [k for k in known if k in keys] + sorted(keys - set(known))


def _dataset_order(names: set[str], quick: bool) -> list[str]:
    known = list(dataset_specs(quick))
    return [n for n in known if n in names] + sorted(names - set(known))


def summarize(datasets: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per key: mean and worst image AUROC over the data sets that have its row, and how many."""
    keys = {k for d in datasets.values() for k in d.get("detectors", {})}
    summary: dict[str, dict[str, Any]] = {}
    for key in _key_order(keys):
        values = [
            float(row["image_auroc"])
            for d in datasets.values()
            if (row := d.get("detectors", {}).get(key)) and row.get("image_auroc") is not None
        ]
        summary[key] = {
            "mean_image_auroc": round(float(np.mean(values)), 4) if values else None,
            "worst_image_auroc": round(float(np.min(values)), 4) if values else None,
            "n_datasets": len(values),
        }
    return summary


def build_payload(protocol: str, datasets: dict[str, Any], quick: bool) -> dict[str, Any]:
    """The results JSON: stamp, rows per data set (report order), summary per key."""
    ordered = {
        name: {
            "detectors": {
                key: datasets[name]["detectors"][key]
                for key in _key_order(set(datasets[name]["detectors"]))
            }
        }
        for name in _dataset_order(set(datasets), quick)
    }
    return {"protocol": protocol, **stamp(), "datasets": ordered, "summary": summarize(ordered)}


def heatmap(payload: dict[str, Any], path: Path) -> Path:
    """``path``: image AUROC per detector (rows) and data set (columns), annotated cells."""
    from inspection.bench import figures

    names = list(payload["datasets"])
    keys = list(payload["summary"])
    values = np.full((len(keys), len(names)), np.nan)
    text = [["" for _ in names] for _ in keys]
    for c, name in enumerate(names):
        for r, key in enumerate(keys):
            row = payload["datasets"][name]["detectors"].get(key)
            if row and row.get("image_auroc") is not None:
                values[r, c] = row["image_auroc"]
                if row.get("chosen"):
                    text[r][c] = f"{row['image_auroc']:.3f}\n{row['chosen']}"
    return figures.value_heatmap(
        path,
        values,
        keys,
        names,
        f"protocol {payload['protocol']}: image AUROC",
        cell_text=text,
    )


def _save(
    rows: dict[str, dict[str, Any]],
    protocol: str,
    results_dir: Path,
    figures_dir: Path,
    quick: bool,
    result: SuiteRun,
) -> dict[str, Any]:
    """Merge ``rows`` into ``<protocol>.json`` (re-read first: other runs may have added rows)
    and rewrite it with its markdown and picture; called after every cell, so a run that is
    stopped keeps what it measured. Returns the payload written."""
    merged = _previous_datasets(results_dir / f"{protocol}.json", protocol)
    for name, new in rows.items():
        merged.setdefault(name, {"detectors": {}})
        merged[name].setdefault("detectors", {}).update(new)
    payload = build_payload(protocol, merged, quick)
    from inspection.bench.suite_report import render_markdown  # it reads this module's specs

    picture = heatmap(payload, figures_dir / "auroc.png")
    markdown = render_markdown(
        payload, picture.relative_to(results_dir).as_posix(), result.skipped, result.failed
    )
    write_results(protocol, payload, markdown, results_dir)
    return payload


def run(
    keys: list[str],
    datasets: list[str] | None = None,
    data_root: Path = DEFAULT_DATA_ROOT,
    quick: bool = False,
    results_dir: Path = RESULTS_DIR,
    isolate: bool = True,
    figures: bool = True,
    bundles_dir: Path | None = None,
    fit: Fit | Literal["auto"] = "auto",
) -> SuiteRun:
    """Measure ``keys`` on ``datasets`` and merge the rows into ``<results_dir>/suite.json``.

    Args:
        keys: registry keys and/or ``auto``.
        datasets: names of :data:`DATASETS` (``--quick``: :data:`QUICK_DATASETS`); ``None``:
            all of them.
        data_root: folder holding the data sets' folders (``../shared/data``).
        quick: synthetic stand-in at each detector's ``quick_config()``; writes
            ``suite-quick.json`` so it never overwrites real results.
        results_dir: where ``<protocol>.json``, ``.md`` and ``<protocol>/`` (pictures) go.
        isolate: one spawned process per cell (``False``: in this process, for tests).
        figures: write the per-cell curve figures too (the heatmap is always written).
        bundles_dir: keep every cell's exported bundle under ``<bundles_dir>/<data set>/<key>``
            (``None``: temporary, removed after timing).
        fit: ``auto`` (the product's default geometry per set), ``stretch`` or ``pad``.

    A data set whose folder is absent is skipped with a warning; a failing cell is logged and
    reported in :attr:`SuiteRun.failed` while the other cells go on.
    """
    protocol = QUICK_PROTOCOL if quick else PROTOCOL
    specs = dataset_specs(quick)
    names = list(specs) if datasets is None else datasets
    for name in names:
        if name not in specs:
            raise ConfigError(f"unknown data set {name!r}; one of: {', '.join(specs)}")
    data_root = data_root.resolve()
    figures_dir = results_dir / protocol
    result = SuiteRun(payload={})
    cells: list[tuple[str, str]] = []
    for name in names:
        spec = specs[name]
        if spec.folder and not (data_root / spec.folder).is_dir():
            why = f"{data_root / spec.folder} not found (see ../shared/data/README.md)"
            logger.warning("skipping data set %s: %s", name, why)
            result.skipped[name] = why
            continue
        cells += [(name, key) for key in keys]
    rows: dict[str, dict[str, Any]] = {}
    for i, (name, key) in enumerate(cells, 1):
        logger.info("[%d/%d] %s on %s", i, len(cells), key, name)
        bundle = None if bundles_dir is None else bundles_dir / name / key
        args = (name, key, data_root, quick, figures_dir if figures else None, bundle, fit)
        if isolate:
            status, value = run_in_child(bench_cell, args)
        else:
            try:
                status, value = "ok", bench_cell(*args)
            except Exception as exc:  # recorded like a failed child
                logger.exception("%s on %s failed", key, name)
                status, value = "error", f"{type(exc).__name__}: {exc}"
        if status != "ok":
            logger.error("%s on %s failed: %s", key, name, value)
            result.failed[f"{name}/{key}"] = str(value)
            if rows:  # the markdown lists the failure beside what was measured
                result.payload = _save(rows, protocol, results_dir, figures_dir, quick, result)
            continue
        rows.setdefault(name, {})[key] = {**stamp(), **value}
        result.measured.append((name, key))
        result.payload = _save(rows, protocol, results_dir, figures_dir, quick, result)
        logger.info(
            "%s on %s: image AUROC %s, fit %.1f s, OpenVINO %.2f ms/image%s",
            key,
            name,
            f"{value['image_auroc']:.3f}" if value["image_auroc"] is not None else "-",
            value["fit_seconds"],
            value["openvino_ms_per_image"],
            f" (chose {value['chosen']})" if "chosen" in value else "",
        )
    if not rows:
        merged = _previous_datasets(results_dir / f"{protocol}.json", protocol)
        logger.warning("nothing measured; %s.json left as it was", protocol)
        result.payload = build_payload(protocol, merged, quick) if merged else {}
    return result
