"""One retraining job for one station: labels in, maybe a new active model out.

:func:`retrain` runs these stages, recording each in the job's log and progress field and
checking for cancellation between them:

1. **assemble** — the station's labelled inspections (consensus of operators' current labels,
   :mod:`.dataset`), split into train and a *holdout* with a seeded, stratified split (seed and
   ids recorded in the job: ``config.holdout`` and ``training_set_item.split``), plus the root
   model's own validation normals (never fitted by any model), half to the refiner, half to the
   holdout;
2. **detector** — the candidate's one-class detector: the root model plus the confirmed normals
   (:mod:`.detector_update`) or a refit;
3. **refiner** / **typer** — supervised refinement and open-set typer from the labelled defects
   (:mod:`.candidate`, :mod:`.refiner`), when there are enough;
4. **export** — the candidate bundle (OpenVINO) under ``models_dir/<station>/job-<id>``;
5. **evaluate** / **gate** — candidate and active bundle scored by the station runtime on the
   same holdout; promoted only if not worse (:mod:`.gate`); the reason goes to the job record;
6. **promote** — the candidate is registered as a model version (always) and made active (if
   the gate passed); stations in database mode hot-reload it by polling.

Torch, anomalib and OpenVINO are imported inside, so importing this module is cheap.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from inspection.data.imageset import ImageSet
from inspection.db import repo
from inspection.db.engine import run_in_transaction
from inspection.db.models import JobStatus
from inspection.detectors.base import ProgressFn, no_progress
from inspection.errors import InspectionError, ModelFileError
from inspection.loop.config import RetrainSettings
from inspection.loop.dataset import (
    DEFECT,
    NORMAL,
    label_watermark,
    labelled_inspections,
    load_images,
    split_holdout,
)
from inspection.loop.gate import GateDecision, score_bundle
from inspection.loop.jobs import JobReporter, RetrainBusyError, RetrainCancelled, start_job
from inspection.loop.normals import NormalSource, as_normals, default_normal_source
from inspection.station.config import StationConfig
from inspection.storage import ArtifactStore

logger = logging.getLogger(__name__)

STAGES = ("assemble", "detector", "refiner", "typer", "export", "evaluate", "gate", "promote")


@dataclass
class RetrainResult:
    """What a retrain did.

    Attributes:
        station: station name.
        job_id: the job's id (None when no job was started, e.g. ``busy``).
        status: ``succeeded``, ``failed``, ``cancelled`` or ``busy``.
        promoted: whether the candidate became the active model.
        candidate_version_id: the registered candidate (None if training did not get there).
        active_version_id: the station's active version afterwards.
        reason: one sentence: why promoted / not promoted / failed.
        metrics: the job's final metrics.
    """

    station: str
    job_id: int | None
    status: str
    promoted: bool = False
    candidate_version_id: int | None = None
    active_version_id: int | None = None
    reason: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


# -- the job ------------------------------------------------------------------------------------


@dataclass
class _Context:
    station: str
    station_id: int
    active_id: int | None
    active_bundle: Path
    root: Path
    meta: dict[str, Any]


def _resolve(session_factory: sessionmaker[Session], name: str) -> _Context:
    from inspection.loop.candidate import root_bundle
    from inspection.runtime import read_metadata

    with session_factory() as session:
        station = repo.get_station_by_name(session, name)
        active = repo.get_active_model(session, station.id)
        if active is None:
            raise ModelFileError(
                f"station {name} has no active model to retrain from; train a first one "
                "(detector.bootstrap, or register and activate a bundle)"
            )
        bundle = Path(active.artifact_path)
        root = root_bundle(bundle)
        return _Context(name, station.id, active.id, bundle, root, read_metadata(root))


def _holdout_seed(settings: RetrainSettings, job_id: int) -> int:
    return settings.holdout.seed if settings.holdout.seed is not None else 1000 + job_id


def retrain(
    station: StationConfig | str,
    *,
    session_factory: sessionmaker[Session],
    store: ArtifactStore,
    settings: RetrainSettings | None = None,
    base_normals: NormalSource | ImageSet | None = None,
    job_id: int | None = None,
    requested_by: int | None = None,
    actor: str = "retrain",
    progress: ProgressFn = no_progress,
    cancel: Callable[[], bool] = lambda: False,
    pooled: Any | None = None,
    job_extra: dict[str, Any] | None = None,
) -> RetrainResult:
    """Retrain ``station`` from its operator labels; promote the candidate if the gate passes.

    Args:
        station: the station's config (gives its region of interest and bootstrap normals) or
            its name.
        session_factory: database sessions.
        store: the artifact store holding the station's frames.
        settings: job settings (default :class:`RetrainSettings`); stored with the job.
        base_normals: the root model's training normals (a function of the input size, or an
            :class:`ImageSet` at that size); default: ``settings.normals_dir`` or the station's
            synthetic bootstrap. Without them the holdout and refiner use confirmed normals only.
        job_id: run this queued job (from the UI/API) instead of creating one.
        requested_by: user id recorded on a created job.
        actor: audit-log actor of the promotion.
        progress: ``(stage, done, total)`` callback (the CLI shows a bar).
        cancel: polled between stages besides the job's ``cancel_requested`` flag.
        pooled: a shared :class:`~inspection.loop.candidate.PooledFeatures` (benchmarks).
        job_extra: extra fields for the job's ``config`` (the scheduler records its trigger).

    Returns:
        A :class:`RetrainResult`; failures are recorded in the job and returned, not raised
        (except when no job could be started: unknown station, no active model).

    Raises:
        NotFoundError / ModelFileError: unknown station or no active model to start from.
    """
    settings = settings or RetrainSettings()
    config = station if isinstance(station, StationConfig) else None
    name = station.id if isinstance(station, StationConfig) else station
    ctx = _resolve(session_factory, name)
    job_config: dict[str, Any] = {
        "settings": settings.model_dump(mode="json"),
        "station": name,
        "root_bundle": str(ctx.root),
        "active_bundle": str(ctx.active_bundle),
        **(job_extra or {}),
    }
    try:
        jid = _start(session_factory, ctx, settings, job_config, requested_by, job_id)
    except RetrainBusyError as exc:
        logger.warning("%s", exc)
        return RetrainResult(name, None, "busy", reason=str(exc))
    reporter = JobReporter(session_factory, jid, STAGES)
    step = reporter.stage_marker(progress, cancel)

    out_dir = settings.models_dir / name / f"job-{jid}"
    try:
        return _run(
            ctx,
            config,
            settings,
            jid,
            reporter,
            step,
            store,
            session_factory,
            base_normals,
            out_dir,
            actor,
            progress,
            pooled,
        )
    except RetrainCancelled as exc:
        reporter.finish(JobStatus.CANCELLED, message=str(exc))
        _remove(out_dir)
        return RetrainResult(name, jid, "cancelled", reason=str(exc))
    except Exception as exc:
        logger.exception("retrain job %s failed", jid)
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        reporter.finish(JobStatus.FAILED, error=detail, message=f"failed: {detail}")
        _remove(out_dir)
        return RetrainResult(name, jid, "failed", reason=detail)


def _start(
    session_factory: sessionmaker[Session],
    ctx: _Context,
    settings: RetrainSettings,
    job_config: dict[str, Any],
    requested_by: int | None,
    job_id: int | None,
) -> int:
    """Create (or claim the queued ``job_id``) the running job; its id.

    Raises:
        RetrainBusyError: another job of the station is running.
    """

    def begin(session: Session) -> int:
        watermark = label_watermark(session, ctx.station_id)
        job = start_job(
            session,
            station_id=ctx.station_id,
            config={**job_config, "label_watermark": watermark},
            base_model_version_id=ctx.active_id,
            detector_type=str(ctx.meta.get("detector")),
            requested_by=requested_by,
            job_id=job_id,
            max_runtime_h=settings.max_runtime_h,
        )
        return job.id

    return run_in_transaction(session_factory, begin, what=f"start retrain of {ctx.station}")


def _remove(path: Path) -> None:
    import shutil

    for p in (path, path.with_name(path.name + ".tmp")):
        if p.exists():
            shutil.rmtree(p, ignore_errors=True)


@dataclass
class _Job:
    """What every step of one retraining job needs."""

    ctx: _Context
    config: StationConfig | None
    settings: RetrainSettings
    jid: int
    reporter: JobReporter
    step: Callable[..., None]
    store: ArtifactStore
    session_factory: sessionmaker[Session]
    actor: str

    @property
    def size(self) -> int:
        """The model's input size in pixels."""
        return int(self.ctx.meta["input"]["size"])

    @property
    def fit(self) -> str:
        """How images reach the square input (the root's, inherited by candidates)."""
        return str(self.ctx.meta["input"].get("fit", "stretch"))


@dataclass
class _BaseNormals:
    """The root model's validation normals, split between the refiner and the holdout."""

    fit: ImageSet | None
    refiner: np.ndarray
    holdout: np.ndarray
    holdout_ids: list[str]


@dataclass
class _Prepared:
    """Step 1's output: the candidate's training data and the labelled holdout."""

    data: Any  # inspection.loop.candidate.TrainingData
    hold_images: np.ndarray
    hold_labels: np.ndarray


def _run(
    ctx: _Context,
    config: StationConfig | None,
    settings: RetrainSettings,
    jid: int,
    reporter: JobReporter,
    step: Callable[..., None],
    store: ArtifactStore,
    session_factory: sessionmaker[Session],
    base_normals: NormalSource | ImageSet | None,
    out_dir: Path,
    actor: str,
    progress: ProgressFn,
    pooled: Any | None,
) -> RetrainResult:
    from inspection.loop.candidate import build_candidate
    from inspection.training import load_trained

    job = _Job(ctx, config, settings, jid, reporter, step, store, session_factory, actor)
    if config is not None and config.detector.source == "bundle":
        reporter.log(
            "note: this station runs its bundle path (detector.source: bundle); a promotion "
            "changes the database only — copy the bundle there to deploy it"
        )
    prepared = _assemble(job, base_normals)  # 1.
    if isinstance(prepared, RetrainResult):
        return prepared
    root = load_trained(ctx.root)  # 2-4.
    candidate = build_candidate(
        root, prepared.data, settings, pooled=pooled, progress=progress, stage=step
    )
    reporter.log(f"candidate: {candidate.info}")
    bundle = _export(job, candidate, out_dir)
    evaluation = _evaluate(job, bundle, prepared)  # 5.
    return _register_and_promote(job, candidate, bundle, evaluation)


def _assemble(job: _Job, base_normals: NormalSource | ImageSet | None) -> _Prepared | RetrainResult:
    """Step 1: labelled inspections split into train and holdout (recorded in the job), plus
    the root's validation normals; a finished :class:`RetrainResult` when there is too little."""
    from inspection.loop.candidate import TrainingData

    ctx, settings, reporter, jid = job.ctx, job.settings, job.reporter, job.jid
    size, fit = job.size, job.fit
    config = job.config
    roi = config.roi.as_tuple() if config is not None and config.roi is not None else None
    seed = _holdout_seed(settings, jid)
    job.step("assemble", message=f"assembling labelled data of station {ctx.station}")
    with job.session_factory() as session:
        assembly = labelled_inspections(session, ctx.station_id)
    counts = assembly.counts()
    if len(assembly.items) < max(1, settings.min_new_labels):
        return _nothing_to_learn(job, len(assembly.items), counts)
    train_items, hold_items = split_holdout(assembly.items, settings.holdout.fraction, seed)
    train_px = load_images(train_items, job.store, size, roi, fit)
    hold_px = load_images(hold_items, job.store, size, roi, fit)
    normals = as_normals(base_normals or default_normal_source(config, settings, fit), size, fit)
    base = _base_normals(job, normals, seed)

    def of_kind(px: Any, kind: str) -> np.ndarray:
        idx = [i for i, it in enumerate(px.items) if it.kind == kind]
        return px.images[idx] if idx else np.zeros((0, size, size, 3), np.uint8)

    confirmed = of_kind(train_px, NORMAL)
    defect_idx = [i for i, it in enumerate(train_px.items) if it.kind == DEFECT]
    ref_refiner = base.refiner if len(base.refiner) else confirmed  # fall back: confirmed
    data = TrainingData(
        confirmed_normals=confirmed,
        defects=of_kind(train_px, DEFECT),
        defect_types=[train_px.items[i].defect_type for i in defect_idx],
        defect_crops=[train_px.crops[i] for i in defect_idx],
        defect_frames=[train_px.frames[i] for i in defect_idx],
        roi=roi,
        ref_normals=ref_refiner,
        base=base.fit,
    )
    hold_images = np.concatenate([hold_px.images, base.holdout])
    hold_labels = np.concatenate(
        [
            np.array([it.kind == DEFECT for it in hold_px.items], dtype=int),
            np.zeros(len(base.holdout), dtype=int),
        ]
    )
    _record_split(job, [i.inspection_id for i in train_px.items], hold_px)
    counts.update(
        train_normals=len(confirmed),
        train_defects=len(defect_idx),
        holdout_labelled=len(hold_px.items),
        holdout_base_normals=len(base.holdout),
        refiner_base_normals=len(ref_refiner),
        unreadable=len(train_px.failed) + len(hold_px.failed),
    )
    reporter.metrics(
        {
            "counts": counts,
            "types": assembly.type_counts(),
            "holdout": {"seed": seed, "base_normal_ids": base.holdout_ids},
        }
    )
    reporter.log(f"data: {counts}")
    return _Prepared(data, hold_images, hold_labels)


def _nothing_to_learn(job: _Job, n_items: int, counts: dict[str, Any]) -> RetrainResult:
    need = max(1, job.settings.min_new_labels)
    reason = f"nothing to learn: {n_items} usable labelled inspections (need {need})"
    job.reporter.finish(
        JobStatus.SUCCEEDED, metrics={"counts": counts, "skipped": reason}, message=reason
    )
    return RetrainResult(
        job.ctx.station,
        job.jid,
        "succeeded",
        reason=reason,
        metrics={"counts": counts},
        active_version_id=job.ctx.active_id,
    )


def _base_normals(job: _Job, normals: ImageSet | None, seed: int) -> _BaseNormals:
    """The root's validation normals (never fitted by any model): part holdout, the rest
    for the refiner; empty without base normals."""
    from inspection.training import split_validation

    size, ctx = job.size, job.ctx
    empty = np.zeros((0, size, size, 3), np.uint8)
    if normals is None or len(normals) < 4:
        job.reporter.log(
            "no base normals available: holdout and refiner use confirmed normals only"
        )
        return _BaseNormals(None, empty, empty.copy(), [])
    root_seed = int((ctx.meta.get("config") or {}).get("seed", 0))
    ref_fit, ref_val = split_validation(normals, 0.15, root_seed)
    if int(ctx.meta.get("n_val", len(ref_val))) != len(ref_val):
        job.reporter.log(
            f"warning: base normals give {len(ref_val)} validation images, the root model "
            f"recorded {ctx.meta.get('n_val')}; are they the images it was trained on?"
        )
    order = np.random.default_rng(seed).permutation(len(ref_val))
    n_hold = max(1, round(job.settings.holdout.base_normal_fraction * len(ref_val)))
    hold_idx, ref_idx = np.sort(order[:n_hold]), np.sort(order[n_hold:])
    return _BaseNormals(
        ref_fit,
        ref_val.images[ref_idx],
        ref_val.images[hold_idx],
        [ref_val.ids[i] for i in hold_idx],
    )


def _record_split(job: _Job, train_ids: list[int], hold_px: Any) -> None:
    def record(session: Session) -> None:
        repo.add_training_items(session, retrain_job_id=job.jid, inspection_ids=train_ids)
        repo.add_training_items(
            session,
            retrain_job_id=job.jid,
            inspection_ids=[i.inspection_id for i in hold_px.items],
            split="holdout",
        )

    run_in_transaction(job.session_factory, record, what=f"retrain job {job.jid}: training set")


def _export(job: _Job, candidate: Any, out_dir: Path) -> Path:
    """Step 4: the candidate bundle under ``out_dir``."""
    from inspection.loop.candidate import export_candidate

    job.step("export", message=f"exporting candidate to {out_dir}")
    return export_candidate(
        candidate,
        out_dir,
        precision=job.settings.precision,
        extra={
            "root_bundle": str(job.ctx.root.resolve()),
            "job_id": job.jid,
            "station": job.ctx.station,
            "parent_bundle": str(job.ctx.active_bundle),
        },
    )


@dataclass
class _Evaluation:
    """Step 5's output: both models' holdout metrics and the gate's decision."""

    candidate: dict[str, Any]
    active: dict[str, Any] | None
    decision: GateDecision


def _evaluate(job: _Job, bundle: Path, prepared: _Prepared) -> _Evaluation:
    """Step 5: candidate and active bundle scored on the same holdout, then the gate."""
    from inspection.loop.gate import decide, model_metrics

    hold_images, hold_labels = prepared.hold_images, prepared.hold_labels
    job.step(
        "evaluate",
        message=f"scoring candidate and active model on {len(hold_images)} holdout images",
    )
    target = job.settings.gate.target_recall
    cand_scores, cand_thr = score_bundle(bundle, hold_images)
    cand_metrics = model_metrics(cand_scores, hold_labels, cand_thr, target)
    act_metrics: dict[str, float | None] | None = None
    try:
        act_scores, act_thr = score_bundle(job.ctx.active_bundle, hold_images)
        act_metrics = model_metrics(act_scores, hold_labels, act_thr, target)
    except (ModelFileError, InspectionError) as exc:
        job.reporter.log(f"active model could not be scored ({exc}); gate compares against nothing")
    job.step("gate")
    decision = decide(job.settings.gate, cand_metrics, act_metrics)
    job.reporter.log(("promote: " if decision.promote else "not promoted: ") + decision.reason)
    return _Evaluation(cand_metrics, act_metrics, decision)


def _register_and_promote(
    job: _Job, candidate: Any, bundle: Path, evaluation: _Evaluation
) -> RetrainResult:
    """Step 6: register the candidate as a model version (always), make it active when the
    gate passed, and finish the job."""
    job.step("promote")
    version_id = _register(job, candidate, bundle, evaluation)
    decision = evaluation.decision
    active_after = job.ctx.active_id
    if decision.promote:
        job.reporter.check_cancel()
        from inspection.loop.promotion import promote

        change = promote(job.session_factory, model_version_id=version_id, actor=job.actor)
        active_after = change.active_version_id
    final = {
        "candidate_version_id": version_id,
        "promoted": decision.promote,
        "gate": decision.to_dict(),
        "candidate": evaluation.candidate,
        "active": evaluation.active,
        "candidate_info": candidate.info,
        "bundle": str(bundle),
    }
    summary = (
        f"candidate version {version_id} "
        + ("promoted" if decision.promote else "kept as candidate")
        + f": {decision.reason}"
    )
    job.reporter.finish(JobStatus.SUCCEEDED, metrics=final, message=summary)
    return RetrainResult(
        job.ctx.station,
        job.jid,
        "succeeded",
        promoted=decision.promote,
        candidate_version_id=version_id,
        active_version_id=active_after,
        reason=decision.reason,
        metrics=final,
    )


def _register(job: _Job, candidate: Any, bundle: Path, evaluation: _Evaluation) -> int:
    """The candidate as a model version of the station (its metrics: holdout, gate,
    calibration); its id."""
    from inspection.runtime import read_metadata

    ctx, jid = job.ctx, job.jid
    meta = read_metadata(bundle)
    version_metrics = {
        "holdout": evaluation.candidate,
        "active_holdout": evaluation.active,
        "gate": evaluation.decision.to_dict(),
        "calibration": meta.get("calibration", {}),
    }

    def register(session: Session) -> int:
        version = repo.register_model_version(
            session,
            station_id=ctx.station_id,
            name=f"{meta['detector']}-loop-job{jid}"[:100],
            detector_type=str(meta["detector"]),
            artifact_path=str(bundle.resolve()),
            config={
                "bundle_created": meta.get("created"),
                "job_id": jid,
                "root_bundle": str(ctx.root),
                "refined": candidate.refined,
                "typer_classes": candidate.typer.classes if candidate.typer is not None else [],
                "typer_operating_point": typer_operating_point(candidate.typer),
            },
            metrics=version_metrics,
            parent_id=ctx.active_id,
            training_job_id=jid,
            registered_by=job.actor,
        )
        return version.id

    return run_in_transaction(job.session_factory, register, what=f"retrain job {jid}: register")


def typer_operating_point(typer: Any | None) -> dict[str, Any] | None:
    """The typer's operating point for the model page: method, target known-accept rate,
    threshold and the rates measured out-of-fold on its training crops (None: no typer)."""
    if typer is None or typer.calibration is None:
        return None
    return {"method": typer.method, "classes": list(typer.classes), **typer.calibration.summary()}
