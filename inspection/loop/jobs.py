"""Retrain job records: one job per station at a time, progress, cancellation, final state.

*One retrain per station at a time* is enforced in the database, not in memory: a job is
started (created or claimed and set ``running``) only inside a transaction that first locks the
station row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite transactions here begin with
``BEGIN IMMEDIATE``, which already serialises writers) and checks that no other job of the
station is ``running``. Two schedulers, a CLI run and an API request racing for the same
station therefore get one job between them; the others get :class:`RetrainBusyError`.

A job whose worker died stays ``running`` forever in the database; one that has been running
longer than ``max_runtime_h`` is marked ``failed`` ("abandoned") when the next job for the
station starts, so a crash cannot block a station's retraining for good.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from inspection.db import repo
from inspection.db.engine import run_in_transaction
from inspection.db.models import JobStatus, RetrainJob, Station, utcnow
from inspection.errors import InvalidStateError, NotFoundError

logger = logging.getLogger(__name__)


class RetrainBusyError(InvalidStateError):
    """Another retrain job of the same station is already running."""


class RetrainCancelled(InvalidStateError):  # noqa: N818 - a signal, not a failure
    """Raised inside a job when an operator asked to cancel it (the job ends ``cancelled``)."""


def _lock_station(session: Session, station_id: int) -> Station:
    station = session.scalar(select(Station).where(Station.id == station_id).with_for_update())
    if station is None:
        raise NotFoundError(f"station {station_id} does not exist")
    return station


def _running_jobs(session: Session, station_id: int) -> list[RetrainJob]:
    return list(
        session.scalars(
            select(RetrainJob)
            .where(RetrainJob.station_id == station_id, RetrainJob.status == JobStatus.RUNNING)
            .order_by(RetrainJob.id)
        )
    )


def _reap_abandoned(
    session: Session, jobs: list[RetrainJob], max_runtime_h: float, now: dt.datetime
) -> list[RetrainJob]:
    """Mark jobs running longer than ``max_runtime_h`` as failed; return the live ones."""
    live = []
    limit = dt.timedelta(hours=max_runtime_h)
    for job in jobs:
        started = job.started_at or job.created_at
        if now - started > limit:
            repo.update_retrain_job(
                session,
                job_id=job.id,
                status=JobStatus.FAILED,
                error=f"abandoned: still running after {max_runtime_h:g} h (worker died?)",
                append_log=f"{now.isoformat(timespec='seconds')} marked abandoned\n",
            )
            logger.warning("retrain job %s marked abandoned", job.id)
        else:
            live.append(job)
    return live


def start_job(
    session: Session,
    *,
    station_id: int,
    config: dict[str, Any],
    base_model_version_id: int | None,
    detector_type: str | None,
    requested_by: int | None = None,
    job_id: int | None = None,
    max_runtime_h: float = 12.0,
) -> RetrainJob:
    """Create (or claim the queued ``job_id``) and mark it running, if the station is free.

    Call inside a transaction; it locks the station row until the transaction ends.

    Raises:
        RetrainBusyError: another job of the station is running.
        NotFoundError / InvalidStateError: ``job_id`` does not exist, belongs to another
            station, or is not queued (cancelled before it started, already done).
    """
    _lock_station(session, station_id)
    now = utcnow()
    running = _reap_abandoned(session, _running_jobs(session, station_id), max_runtime_h, now)
    if running:
        raise RetrainBusyError(
            f"station {station_id} already has retrain job {running[0].id} running "
            f"(started {running[0].started_at}); one retrain per station at a time"
        )
    if job_id is None:
        job = repo.create_retrain_job(
            session,
            station_id=station_id,
            base_model_version_id=base_model_version_id,
            detector_type=detector_type,
            config=config,
            requested_by=requested_by,
        )
    else:
        found = session.get(RetrainJob, job_id)
        if found is None:
            raise NotFoundError(f"retrain job {job_id} does not exist")
        if found.station_id != station_id:
            raise InvalidStateError(
                f"retrain job {job_id} belongs to station {found.station_id}, not {station_id}"
            )
        if found.status != JobStatus.QUEUED:
            raise InvalidStateError(f"retrain job {job_id} is {found.status.value}, not queued")
        job = found
        job.config = {**job.config, **config}
        job.base_model_version_id = base_model_version_id
        job.detector_type = detector_type
    return repo.update_retrain_job(
        session,
        job_id=job.id,
        status=JobStatus.RUNNING,
        append_log=f"{now.isoformat(timespec='seconds')} started\n",
    )


class JobReporter:
    """Writes a running job's progress to its record and checks for cancellation.

    Each :meth:`stage` call appends a timestamped line to the job log and stores
    ``metrics["progress"] = {"stage", "done", "total", "fraction"}``; :meth:`check_cancel` reads
    ``cancel_requested`` and raises :class:`RetrainCancelled` when it is set. Every call is its
    own short transaction, so the UI sees progress while the job runs.

    Args:
        session_factory: database sessions.
        job_id: the running job.
        stages: names of the job's stages in order (for the overall fraction).
    """

    def __init__(
        self, session_factory: sessionmaker[Session], job_id: int, stages: tuple[str, ...]
    ) -> None:
        self.session_factory = session_factory
        self.job_id = job_id
        self.stages = stages

    def _write(self, **kwargs: Any) -> None:
        run_in_transaction(
            self.session_factory,
            lambda s: repo.update_retrain_job(s, job_id=self.job_id, **kwargs),
            what=f"retrain job {self.job_id}: progress",
        )

    def log(self, message: str) -> None:
        """Append one timestamped line to the job log (and the Python log)."""
        logger.info("retrain job %s: %s", self.job_id, message)
        stamp = utcnow().isoformat(timespec="seconds")
        self._write(append_log=f"{stamp} {message}\n")

    def stage(self, name: str, done: int = 0, total: int = 0, message: str | None = None) -> None:
        """Record that stage ``name`` is at ``done`` of ``total`` (0: unknown)."""
        index = self.stages.index(name) if name in self.stages else len(self.stages) - 1
        inner = done / total if total else 0.0
        fraction = (index + inner) / max(1, len(self.stages))
        progress = {"stage": name, "done": done, "total": total, "fraction": round(fraction, 4)}
        text = message if message is not None else f"stage {name} ({done}/{total})"
        logger.info("retrain job %s: %s", self.job_id, text)
        stamp = utcnow().isoformat(timespec="seconds")
        self._write(metrics={"progress": progress}, append_log=f"{stamp} {text}\n")

    def metrics(self, values: dict[str, Any]) -> None:
        """Merge ``values`` into the job's metrics."""
        self._write(metrics=values)

    def cancel_requested(self) -> bool:
        """Whether someone asked to cancel the job."""
        with self.session_factory() as session:
            job = session.get(RetrainJob, self.job_id)
            return bool(job is not None and job.cancel_requested)

    def stage_marker(
        self,
        progress: Callable[[str, int, int], None],
        cancel: Callable[[], bool] = lambda: False,
    ) -> Callable[..., None]:
        """The job's ``step(stage, done=0, total=0, message=None)``: checks ``cancel`` and the
        job's cancel flag, records the stage, reports ``progress``.

        Raises (from ``step``):
            RetrainCancelled: cancelled by ``cancel`` (scheduler stopping) or by a person.
        """

        def step(stage: str, done: int = 0, total: int = 0, message: str | None = None) -> None:
            if cancel():
                raise RetrainCancelled(
                    f"retrain job {self.job_id} was cancelled (scheduler stopping)"
                )
            self.check_cancel()
            self.stage(stage, done, total, message)
            progress(stage, done, total)

        return step

    def check_cancel(self) -> None:
        """Raise :class:`RetrainCancelled` when cancellation was requested."""
        if self.cancel_requested():
            raise RetrainCancelled(f"retrain job {self.job_id} was cancelled")

    def finish(
        self,
        status: JobStatus,
        *,
        metrics: dict[str, Any] | None = None,
        error: str | None = None,
        message: str | None = None,
    ) -> None:
        """Put the job in its final state with its last metrics and log line."""
        stamp = utcnow().isoformat(timespec="seconds")
        line = f"{stamp} {message or status.value}\n"
        logger.info("retrain job %s: %s", self.job_id, message or status.value)
        self._write(status=status, metrics=metrics, error=error, append_log=line)


def request_cancel_station(
    session: Session, *, station_id: int, requested_by: int | str | None = None
) -> list[int]:
    """Ask every queued or running job of the station to stop; returns their ids."""
    jobs = session.scalars(
        select(RetrainJob).where(
            RetrainJob.station_id == station_id,
            RetrainJob.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
        )
    )
    ids = []
    for job in jobs:
        repo.request_cancel(session, job_id=job.id, requested_by=requested_by)
        ids.append(job.id)
    return ids
