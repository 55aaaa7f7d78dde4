"""Retraining jobs as people ask for them: list, queue (engineer; audited by the repo) and
cancel. The job runner itself is :mod:`inspection.loop.jobs`."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from inspection.db import repo
from inspection.db.models import RetrainJob
from inspection.services.models import get_model_version
from inspection.services.uow import unit_of_work


def retrain_jobs(session: Session, *, limit: int = 50) -> list[RetrainJob]:
    """The newest retraining jobs."""
    return list(session.scalars(select(RetrainJob).order_by(RetrainJob.id.desc()).limit(limit)))


def request_retraining(
    session: Session,
    *,
    station_id: int,
    requested_by: int,
    base_model_version_id: int | None = None,
    detector_type: str | None = None,
    from_active: bool = False,
) -> RetrainJob:
    """Queue a retraining job for a station; committed.

    ``from_active``: start from the station's active model (its id and detector type)
    instead of ``base_model_version_id`` / ``detector_type``.

    Raises:
        NotFoundError: no such station or base model version.
    """
    with unit_of_work(session):
        repo.get_station(session, station_id)
        if from_active:
            active = repo.get_active_model(session, station_id)
            base_model_version_id = active.id if active is not None else None
            detector_type = active.detector_type if active is not None else None
        elif base_model_version_id is not None:
            get_model_version(session, base_model_version_id)
        return repo.create_retrain_job(
            session,
            station_id=station_id,
            base_model_version_id=base_model_version_id,
            detector_type=detector_type,
            requested_by=requested_by,
        )


def cancel(session: Session, *, job_id: int, actor: repo.Actor) -> RetrainJob:
    """Cancel a queued job, or ask a running one to stop (audited); committed.

    Raises:
        NotFoundError: no such job.
    """
    with unit_of_work(session):
        return repo.request_cancel(session, job_id=job_id, requested_by=actor)
