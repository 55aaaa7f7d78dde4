"""Retraining jobs: creation, state changes, cancellation, claiming the next queued job, and
the inspections a model version was trained on.

Conventions of every data-access module: :mod:`inspection.db`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from inspection.db.common import Actor, audit, get_existing
from inspection.db.models import (
    JobStatus,
    ModelVersion,
    RetrainJob,
    TrainingSetItem,
    utcnow,
)
from inspection.errors import InvalidStateError

#: Jobs in these states never change again.
FINAL_JOB_STATES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
_JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
}


MAX_LOG_CHARS = 200_000


# -- retraining --------------------------------------------------------------------------------


def create_retrain_job(
    session: Session,
    *,
    station_id: int | None,
    base_model_version_id: int | None = None,
    detector_type: str | None = None,
    config: Mapping[str, Any] | None = None,
    requested_by: int | None = None,
    training_inspection_ids: Iterable[int] = (),
    split: str = "train",
) -> RetrainJob:
    """Queue a retraining job, optionally with its training set (see :func:`add_training_items`)."""
    job = RetrainJob(
        station_id=station_id,
        base_model_version_id=base_model_version_id,
        detector_type=detector_type,
        status=JobStatus.QUEUED,
        requested_by_id=requested_by,
        config=dict(config or {}),
        metrics={},
        log="",
        cancel_requested=False,
        created_at=utcnow(),
    )
    session.add(job)
    session.flush()
    add_training_items(
        session, retrain_job_id=job.id, inspection_ids=training_inspection_ids, split=split
    )
    audit(
        session,
        "retrain_job.create",
        job.id,
        actor=requested_by,
        after={"station_id": station_id, "base_model_version_id": base_model_version_id},
    )
    return job


def add_training_items(
    session: Session, *, retrain_job_id: int, inspection_ids: Iterable[int], split: str = "train"
) -> int:
    """Mark inspections as part of a job's training set (retention keeps them); returns count.

    Already-listed inspections are skipped.
    """
    ids = sorted(set(inspection_ids))
    if not ids:
        return 0
    present = set(
        session.scalars(
            select(TrainingSetItem.inspection_id).where(
                TrainingSetItem.retrain_job_id == retrain_job_id,
                TrainingSetItem.inspection_id.in_(ids),
            )
        )
    )
    new = [i for i in ids if i not in present]
    session.add_all(
        TrainingSetItem(retrain_job_id=retrain_job_id, inspection_id=i, split=split) for i in new
    )
    session.flush()
    return len(new)


def update_retrain_job(
    session: Session,
    *,
    job_id: int,
    status: JobStatus | str | None = None,
    metrics: Mapping[str, Any] | None = None,
    append_log: str | None = None,
    error: str | None = None,
) -> RetrainJob:
    """Advance a job (queued -> running -> succeeded/failed/cancelled) and record progress.

    ``started_at``/``finished_at`` are set on entering running / a final state. ``metrics`` are
    merged into the stored ones; ``append_log`` is appended (the log keeps its last
    :data:`MAX_LOG_CHARS` characters).

    Raises:
        InvalidStateError: the job is already final or the transition is not allowed.
    """
    job = get_existing(session, RetrainJob, job_id, "retrain job")
    if job.status in FINAL_JOB_STATES:
        raise InvalidStateError(f"retrain job {job.id} is already {job.status.value}")
    if status is not None:
        target = JobStatus(status)
        if target not in _JOB_TRANSITIONS[job.status]:
            raise InvalidStateError(
                f"retrain job {job.id} is {job.status.value}; cannot become {target.value}"
            )
        now = utcnow()
        if target == JobStatus.RUNNING and job.started_at is None:
            job.started_at = now
        if target in FINAL_JOB_STATES:
            job.finished_at = now
        job.status = target
    if metrics:
        job.metrics = {**job.metrics, **metrics}
    if append_log:
        job.log = (job.log + append_log)[-MAX_LOG_CHARS:]
    if error is not None:
        job.error = error
    session.flush()
    return job


def request_cancel(
    session: Session, *, job_id: int, requested_by: int | str | Actor | None = None
) -> RetrainJob:
    """Ask a job to stop: queued jobs are cancelled at once, running ones see the flag."""
    job = get_existing(session, RetrainJob, job_id, "retrain job")
    if job.status in FINAL_JOB_STATES:
        return job
    job.cancel_requested = True
    if job.status == JobStatus.QUEUED:
        job.status = JobStatus.CANCELLED
        job.finished_at = utcnow()
    audit(session, "retrain_job.cancel", job.id, actor=requested_by)
    session.flush()
    return job


def claim_next_retrain_job(session: Session) -> RetrainJob | None:
    """Take the oldest queued job and mark it running (one worker gets each job).

    On PostgreSQL the row is locked with ``FOR UPDATE SKIP LOCKED``; on SQLite the write
    transaction (``BEGIN IMMEDIATE``) already serialises workers.
    """
    stmt = (
        select(RetrainJob)
        .where(RetrainJob.status == JobStatus.QUEUED)
        .order_by(RetrainJob.created_at, RetrainJob.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    job = session.scalar(stmt)
    if job is None:
        return None
    return update_retrain_job(session, job_id=job.id, status=JobStatus.RUNNING)


def training_set(session: Session, *, model_version_id: int) -> list[int]:
    """Ids of the inspections the model version was trained on (via its training job)."""
    version = get_existing(session, ModelVersion, model_version_id, "model version")
    if version.training_job_id is None:
        return []
    stmt = (
        select(TrainingSetItem.inspection_id)
        .where(TrainingSetItem.retrain_job_id == version.training_job_id)
        .order_by(TrainingSetItem.inspection_id)
    )
    return list(session.scalars(stmt))
