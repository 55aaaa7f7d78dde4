"""``inspection bench loop``: does one retraining cycle from operator labels help, on real data?

Protocol ``mt-exp`` (magnetic tile; Huang, Qiu, Yuan, The Visual Computer 36, 2020):

1. The ``mt-exp`` test set is split, stratified by class and seeded, into a *production
   stream* half (in a seeded random order) and an *evaluation* half. Nothing of the evaluation
   half is seen by training, threshold setting or any setting of the loop.
2. The station model is PaDiM with its default config trained on the ``mt-exp`` training
   normals (:func:`inspection.training.train`: 15 % held out for the threshold), exported to
   OpenVINO. The station (its OpenVINO runtime) scores the stream; flagged items are stored with
   their frames and regions in a fresh database, as a station stores them.
3. Simulated operators label the first ``N`` flagged items of the stream with the ground truth:
   false positives as ``pass``, defects as ``fail`` with their type.
4. :func:`inspection.loop.retrain.retrain` runs the real job (dataset from the database,
   frozen holdout, candidate, gate, promotion); the root model's training normals are passed as
   its base normals.
5. On the evaluation half: false-positive rate at 95 % recall and AUROC of the station model
   before and of the station's active model after; *unknown-type detection*: for every labelled
   defect type T, the refiner and typer are refitted without T's labels (everything else
   identical) — the detection of T (FPR at 95 % recall with T's evaluation images as the only
   defects) before and after, and how often the typer calls T's images ``unknown`` versus the
   labelled types' images.

The base model and its scores on the test set are cached under ``--workdir`` (gitignored); a
cycle takes minutes on two cores.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inspection.bench.report import RESULTS_DIR, markdown_table, stamp, write_results
from inspection.data.imageset import GOOD, ImageSet
from inspection.detectors.base import ProgressFn, no_progress

logger = logging.getLogger(__name__)

PROTOCOL = "mt-exp"
STATION = "mt-loop"
CITATION = (
    'Huang, Qiu, Yuan, "Surface defect saliency of magnetic tile", The Visual Computer 36 '
    "(2020), doi 10.1007/s00371-018-1588-5"
)
COLUMNS = (
    "labels",
    "labelled_defects",
    "labelled_false_positives",
    "fpr_at_95_recall_before",
    "fpr_at_95_recall_after",
    "relative_fpr_reduction",
    "auroc_before",
    "auroc_after",
    "promoted",
    "novel_type_fpr_at_95_recall_before",
    "novel_type_fpr_at_95_recall_after",
    "novel_flagged_unknown_after",
    "known_flagged_unknown_after",
    "typing_accuracy_after",
    "retrain_seconds",
)


@dataclass(frozen=True)
class Split:
    """Indices into the ``mt-exp`` test set: the stream (in stream order) and the evaluation."""

    stream: np.ndarray
    evaluation: np.ndarray


def split_test(test: ImageSet, seed: int = 0) -> Split:
    """Seeded, class-stratified halves of the test set; the stream half in seeded order."""
    rng = np.random.default_rng(seed)
    stream: list[int] = []
    evaluation: list[int] = []
    types = np.array(test.defect_types)
    for kind in sorted(set(test.defect_types)):
        idx = rng.permutation(np.flatnonzero(types == kind))
        half = len(idx) // 2
        stream.extend(idx[:half].tolist())
        evaluation.extend(idx[half:].tolist())
    return Split(rng.permutation(np.array(stream)), np.sort(np.array(evaluation)))


@dataclass
class Scored:
    """Station-side outputs of a bundle on some images."""

    raw: np.ndarray
    maps: np.ndarray
    threshold: float
    pixel_threshold: float


def score_images(bundle: Path, images: np.ndarray, progress: ProgressFn = no_progress) -> Scored:
    """Raw scores and maps of ``images`` through the station runtime (OpenVINO)."""
    from inspection.runtime import OpenVinoModel

    model = OpenVinoModel(bundle)
    raws, maps = [], []
    for start in range(0, len(images), 8):
        pred = model.predict(images[start : start + 8])
        raws.append(pred.raw_score)
        maps.append(pred.anomaly_map.astype(np.float16))
        progress(f"scoring {bundle.name}", min(start + 8, len(images)), len(images))
    return Scored(
        np.concatenate(raws), np.concatenate(maps), model.image_threshold, model.pixel_threshold
    )


def base_model(train: ImageSet, workdir: Path, progress: ProgressFn = no_progress) -> Path:
    """PaDiM (default config) trained on the mt-exp training normals into ``workdir/base``.

    Trained afresh on every run (about half a minute): a cached model would outlive changes to
    the code and defaults that the results are stamped with.
    """
    import shutil

    from inspection import training
    from inspection.detectors import registry

    out = workdir / "base"
    shutil.rmtree(out, ignore_errors=True)
    progress("training base PaDiM", 0, 1)
    trained = training.train(registry.create("padim"), train, progress=progress)
    training.export_openvino(trained, out, extra_metadata={"trained_for": f"bench loop {PROTOCOL}"})
    progress("training base PaDiM", 1, 1)
    return out


def _cached_scores(bundle: Path, test: ImageSet, workdir: Path, progress: ProgressFn) -> Scored:
    meta = json.loads((bundle / "model.json").read_text())
    path = workdir / f"base-test-{meta['created'].replace(':', '')}.npz"
    if path.is_file():
        with np.load(path) as data:
            return Scored(data["raw"], data["maps"], float(data["thr"]), float(data["pix"]))
    scored = score_images(bundle, test.images, progress)
    np.savez(
        path, raw=scored.raw, maps=scored.maps, thr=scored.threshold, pix=scored.pixel_threshold
    )
    return scored


# -- one cycle ----------------------------------------------------------------------------------


def _record_stream(
    factory: Any,
    store: Any,
    station_id: int,
    version_id: int,
    test: ImageSet,
    stream: np.ndarray,
    base: Scored,
) -> list[tuple[int, int, bool]]:
    """Store the stream as the station would: (inspection id, test index, flagged) in order."""
    import datetime as dt

    from inspection.data.imageset import read_image
    from inspection.db import repo
    from inspection.db.engine import run_in_transaction
    from inspection.db.models import ArtifactKind, Verdict
    from inspection.station.regions import find_regions

    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    size = test.images.shape[1]
    items: list[repo.InspectionData] = []
    flags: list[bool] = []
    for k, i in enumerate(stream):
        raw = float(base.raw[i])
        flagged = raw > base.threshold
        regions: list[repo.RegionData] = []
        artifacts: list[repo.ArtifactData] = []
        if flagged:
            path = Path(test.ids[i])
            stored = store.put_file(path)
            artifacts.append(repo.ArtifactData.from_stored(stored, kind=ArtifactKind.FRAME))
            fh, fw = read_image(path).shape[:2]
            amap = base.maps[i].astype(np.float32).reshape(size, size)
            sx, sy = fw / size, fh / size
            for box in find_regions(amap, base.pixel_threshold, max_regions=8, min_area=4):
                regions.append(
                    repo.RegionData(
                        x=int(box.x * sx),
                        y=int(box.y * sy),
                        w=max(1, round(box.w * sx)),
                        h=max(1, round(box.h * sy)),
                        area_px=float(box.area * sx * sy),
                        score=box.peak,
                    )
                )
        items.append(
            repo.InspectionData(
                station_id=station_id,
                captured_at=start + dt.timedelta(seconds=k),
                frame_ref=test.ids[i],
                model_version_id=version_id,
                raw_score=raw,
                norm_score=0.9 if flagged else 0.1,
                verdict=Verdict.FAIL if flagged else Verdict.PASS,
                latency_ms=0.0,
                idempotency_key=f"stream-{k}",
                regions=regions,
                artifacts=artifacts,
            )
        )
        flags.append(flagged)
    rows = run_in_transaction(factory, lambda s: [r.id for r in repo.record_inspections(s, items)])
    return [(rid, int(i), f) for rid, i, f in zip(rows, stream, flags, strict=True)]


def _label(
    factory: Any, test: ImageSet, recorded: list[tuple[int, int, bool]], n: int
) -> list[int]:
    """The simulated operator labels the first ``n`` flagged items; returns their test indices."""
    from inspection.db import repo
    from inspection.db.engine import run_in_transaction
    from inspection.db.models import Role, Verdict

    chosen = [(rid, i) for rid, i, flagged in recorded if flagged][:n]

    def tx(session: Any) -> None:
        user = repo.create_user(session, username="sim-operator", role=Role.OPERATOR)
        for rid, i in chosen:
            kind = test.defect_types[i]
            repo.add_label(
                session,
                inspection_id=rid,
                user_id=user.id,
                verdict=Verdict.PASS if kind == GOOD else Verdict.FAIL,
                defect_type=None if kind == GOOD else kind,
            )

    run_in_transaction(factory, tx)
    return [i for _, i in chosen]


def _loop_database(folder: Path, base_bundle: Path) -> tuple[Any, Any, int, int]:
    """A fresh SQLite database in ``folder`` with the bench station running ``base_bundle``:
    engine, session factory, station id and the base model version's id."""
    from inspection.db import migrate, repo
    from inspection.db.engine import make_engine, make_session_factory, run_in_transaction
    from inspection.db.models import ModelStatus

    engine = make_engine(f"sqlite:///{folder / 'loop.db'}")
    migrate.upgrade(engine)
    factory = make_session_factory(engine)

    def setup(session: Any) -> tuple[int, int]:
        station = repo.upsert_station(session, name=STATION, line_name="mt-bench")
        version = repo.register_model_version(
            session,
            station_id=station.id,
            name="padim-base",
            detector_type="padim",
            artifact_path=str(base_bundle.resolve()),
        )
        repo.set_model_status(session, model_version_id=version.id, status=ModelStatus.ACTIVE)
        return station.id, version.id

    station_id, base_version = run_in_transaction(factory, setup)
    return engine, factory, station_id, base_version


def _finished_job(factory: Any, job_id: int | None) -> tuple[dict[str, Any], set[int]]:
    """The retraining job's metrics and config, and the inspections it trained on."""
    from sqlalchemy import select

    from inspection.db.models import RetrainJob, TrainingSetItem

    with factory() as session:
        job = session.get(RetrainJob, job_id)
        assert job is not None
        job_record = {"metrics": dict(job.metrics), "config": dict(job.config)}
        train_ids = set(
            session.scalars(
                select(TrainingSetItem.inspection_id).where(
                    TrainingSetItem.retrain_job_id == job.id, TrainingSetItem.split == "train"
                )
            )
        )
    return job_record, train_ids


def _cycle_row(
    n_labels: int,
    labelled: Any,
    test: ImageSet,
    split: Split,
    base: Scored,
    base_bundle: Path,
    result: Any,
    job_record: dict[str, Any],
    cand: Scored,
    seconds: float,
) -> dict[str, Any]:
    """Detection before and after the cycle on the evaluation images, and the job's record."""
    from inspection.loop.gate import auroc, fpr_at_recall

    ev = split.evaluation
    y = (np.array(test.defect_types)[ev] != GOOD).astype(int)
    after_bundle = Path(result.metrics["bundle"]) if result.promoted else base_bundle
    after = cand if result.promoted else None
    after_raw = after.raw if after is not None else base.raw[ev]
    kinds = Counter(test.defect_types[i] for i in labelled)
    before_fpr = fpr_at_recall(base.raw[ev], y, 0.95)
    after_fpr = fpr_at_recall(after_raw, y, 0.95)
    threshold = cand.threshold if result.promoted else base.threshold
    metrics = job_record["metrics"]
    return {
        "labels": n_labels,
        "labelled_defects": sum(v for k, v in kinds.items() if k != GOOD),
        "labelled_false_positives": kinds.get(GOOD, 0),
        "labelled_types": {k: v for k, v in sorted(kinds.items()) if k != GOOD},
        "fpr_at_95_recall_before": before_fpr,
        "fpr_at_95_recall_after": after_fpr,
        "relative_fpr_reduction": (
            (before_fpr - after_fpr) / before_fpr if before_fpr and after_fpr is not None else None
        ),
        "auroc_before": auroc(base.raw[ev], y),
        "auroc_after": auroc(after_raw, y),
        "candidate_fpr_at_95_recall": fpr_at_recall(cand.raw, y, 0.95),
        "promoted": result.promoted,
        "gate": metrics.get("gate"),
        "holdout_candidate": metrics.get("candidate"),
        "holdout_active": metrics.get("active"),
        "threshold_after": {
            "recall": float(np.mean(after_raw[y == 1] > threshold)),
            "fpr": float(np.mean(after_raw[y == 0] > threshold)),
        },
        "threshold_before": {
            "recall": float(np.mean(base.raw[ev][y == 1] > base.threshold)),
            "fpr": float(np.mean(base.raw[ev][y == 0] > base.threshold)),
        },
        "refiner": metrics.get("candidate_info", {}).get("refiner"),
        "job_counts": metrics.get("counts"),
        "after_bundle": str(after_bundle),
        "retrain_seconds": round(seconds, 1),
        "novel_flagged_unknown_before": 1.0,
        "known_flagged_unknown_before": 1.0,
    }


def run_cycle(
    n_labels: int,
    *,
    test: ImageSet,
    train: ImageSet,
    split: Split,
    base_bundle: Path,
    base: Scored,
    workdir: Path,
    novel: bool = True,
    progress: ProgressFn = no_progress,
) -> dict[str, Any]:
    """One labelling + retraining cycle in a fresh database; the numbers of one results row."""
    from inspection.loop.config import RetrainSettings
    from inspection.loop.retrain import retrain
    from inspection.storage import LocalArtifactStore

    folder = workdir / f"cycle-{n_labels}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    engine, factory, station_id, base_version = _loop_database(folder, base_bundle)
    store = LocalArtifactStore(folder / "artifacts")
    recorded = _record_stream(factory, store, station_id, base_version, test, split.stream, base)
    labelled = _label(factory, test, recorded, n_labels)
    settings = RetrainSettings(models_dir=folder / "models", holdout={"seed": 0})
    start = time.perf_counter()
    result = retrain(
        STATION,
        session_factory=factory,
        store=store,
        settings=settings,
        base_normals=train,
        actor="bench",
        progress=progress,
    )
    seconds = time.perf_counter() - start
    if result.status != "succeeded" or result.candidate_version_id is None:
        engine.dispose()
        raise RuntimeError(f"retrain with {n_labels} labels {result.status}: {result.reason}")
    candidate_bundle = Path(result.metrics["bundle"])
    job_record, train_ids = _finished_job(factory, result.job_id)
    engine.dispose()
    by_row = {rid: i for rid, i, _ in recorded}
    train_indices = sorted(by_row[r] for r in train_ids)
    cand = score_images(candidate_bundle, test.images[split.evaluation], progress)
    row = _cycle_row(
        n_labels, labelled, test, split, base, base_bundle, result, job_record, cand, seconds
    )
    row.update(_typing_accuracy(candidate_bundle, test, split.evaluation, cand))
    if novel:
        from inspection.bench.loop_novel import novel_types

        row.update(
            novel_types(
                candidate_bundle,
                base_bundle,
                test,
                train,
                job_record,
                train_indices,
                split,
                base,
                settings,
                progress,
            )
        )
    return row


def _typing_accuracy(
    bundle: Path, test: ImageSet, evaluation: np.ndarray, scored: Scored
) -> dict[str, Any]:
    """The station's typing step (the bundle's typer) on the evaluation defects it flags."""
    from inspection.data.imageset import read_image
    from inspection.loop.dataset import station_crop
    from inspection.loop.station_typing import typing_dir

    found = typing_dir(bundle)
    if found is None:
        return {"typing_accuracy_after": None, "typing_unknown_rate_after": None}
    from inspection.openset.typer_runtime import TypingRuntime

    runtime = TypingRuntime(found)
    idx = [
        k
        for k, i in enumerate(evaluation)
        if test.defect_types[i] != GOOD and scored.raw[k] > scored.threshold
    ]
    if not idx:
        return {"typing_accuracy_after": None, "typing_unknown_rate_after": None}
    crops = [
        station_crop(
            read_image(test.ids[evaluation[k]]),
            scored.maps[k].astype(np.float32),
            scored.pixel_threshold,
        )
        for k in idx
    ]
    results = runtime.predict(np.stack([runtime_resize(c, runtime.image_size) for c in crops]))
    truth = [test.defect_types[evaluation[k]].strip().lower() for k in idx]  # as stored
    known = [t in runtime.classes for t in truth]
    correct = [r.label == t and not r.is_unknown for r, t in zip(results, truth, strict=True)]
    return {
        "typing_accuracy_after": float(
            np.mean([c for c, k in zip(correct, known, strict=True) if k])
        )
        if any(known)
        else None,
        "typing_unknown_rate_after": float(np.mean([r.is_unknown for r in results])),
        "typer_classes": runtime.classes,
    }


def runtime_resize(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) -> (size, size, 3) uint8 (the typing runtime's own resize)."""
    from inspection.openset.typer_runtime import resize_images

    return resize_images(image[None], size)[0]


def run(
    data: Path,
    *,
    labels: tuple[int, ...] = (25, 50, 100),
    seed: int = 0,
    workdir: Path = Path("var/bench/loop"),
    results_dir: Path = RESULTS_DIR,
    novel: bool = True,
    progress: ProgressFn = no_progress,
) -> dict[str, Any]:
    """Run the cycles and write ``loop.json`` / ``loop.md`` into ``results_dir``."""
    from inspection.data.magnetic_tile import mt_exp

    workdir.mkdir(parents=True, exist_ok=True)
    progress("loading mt-exp", 0, 1)
    train, test = mt_exp(data, 256)
    progress("loading mt-exp", 1, 1)
    split = split_test(test, seed)
    bundle = base_model(train, workdir, progress)
    base = _cached_scores(bundle, test, workdir, progress)
    cycles = []
    for n in labels:
        logger.info("cycle with %d labels", n)
        row = run_cycle(
            n,
            test=test,
            train=train,
            split=split,
            base_bundle=bundle,
            base=base,
            workdir=workdir,
            novel=novel,
            progress=progress,
        )
        cycles.append(row)
        logger.info("cycle %d: %s", n, {c: row.get(c) for c in COLUMNS})
    types = Counter(test.defect_types[i] for i in split.evaluation)
    stream_types = Counter(test.defect_types[i] for i in split.stream)
    payload: dict[str, Any] = {
        **stamp(),
        "protocol": PROTOCOL,
        "data": CITATION,
        "split": {
            "seed": seed,
            "stream": dict(sorted(stream_types.items())),
            "evaluation": dict(sorted(types.items())),
            "stream_flagged_by_base": int((base.raw[split.stream] > base.threshold).sum()),
        },
        "station_model": "padim (default config) trained on mt-exp train, OpenVINO fp32",
        "cycles": cycles,
    }
    write_results("loop", payload, _markdown(payload), results_dir)
    return payload


def _markdown(payload: dict[str, Any]) -> str:
    rows = payload["cycles"]
    table = markdown_table(rows, COLUMNS)
    split = payload["split"]
    lines = [
        "Closed loop on `mt-exp` (magnetic tile; " + payload["data"] + ").",
        "",
        f"Test set split (seed {split['seed']}, stratified by class) into a production stream "
        f"{split['stream']} and an evaluation half {split['evaluation']}. The station model "
        f"(PaDiM, default config, trained on mt-exp train) flags {split['stream_flagged_by_base']} "
        "stream items; a simulated operator labels the first N flagged ones with the truth; "
        "`inspection retrain` runs the real job (database, frozen holdout, gate, promotion). "
        "All numbers below are on the evaluation half, which no step of the loop sees.",
        "",
        table,
        "",
        "* `fpr_at_95_recall_*`: false-positive rate at the threshold that catches 95 % of the "
        "evaluation defects (threshold-free comparison of the scores); *before*: the station "
        "model; *after*: the station's active model after the cycle (the candidate if the gate "
        "promoted it).",
        "* `novel_type_*`: leave-one-type-out — for each labelled type T the refiner and typer are "
        "refitted without T's labels; detection of T alone vs the normals before/after, and how "
        "often the typer calls T `unknown` (`novel_flagged_unknown_after`) versus the labelled "
        "types (`known_flagged_unknown_after`). Before the loop there is no typer: every flagged "
        "region is unknown (rate 1.0 for both).",
        "* `typing_accuracy_after`: the station typing step (the bundle's typer, on crops cut "
        "around the new model's map) on flagged evaluation defects of types it knows.",
        "* Settings are `RetrainSettings()` defaults (patch refiner C=1, top_k=8; chosen on the "
        "stream half only). Gate: `fpr_at_threshold` on the job's frozen holdout (false alarms "
        "at each model's deployed threshold, tolerance 0) with the candidate required to flag "
        ">= 95 % of the holdout's labelled defects; each cycle's holdout numbers for both "
        "models are in the JSON (`holdout_candidate`, `holdout_active`).",
    ]
    return "\n".join(lines)
