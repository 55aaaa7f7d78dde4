"""Scheduled retraining: per-station cron schedules, and a single-box runner.

Each station config's ``retrain.schedule`` is a cron expression (``"0 2 * * *"``: nightly at
02:00 in the scheduler's time zone, local by default). A station is *due* when a scheduled
time has passed since its last retrain job (the slot a scheduled job was for, else when a job
was created; read from the database, so restarts and several schedulers agree; a station that
never retrained counts from the scheduler's start). One
:meth:`Scheduler.tick` runs every due station's retrain, then any job queued from the review
UI / API, one after the other; the database makes sure only one job per station runs even with
several schedulers.

Three ways to run it, one job definition:

* ``inspection scheduler run`` — :class:`SchedulerWorker`, a :class:`~inspection.worker.Worker`
  that ticks every ``poll_s`` seconds on one box;
* ``deploy/cron/inspection-retrain.cron`` — system cron calls ``inspection retrain --station X``;
* ``deploy/k8s/retrain-cronjob.yaml`` — a Kubernetes CronJob running the same command.

A scheduled run is skipped (no job row) when no operator label of the station changed since
its last successful job; explicit runs (``inspection retrain``) always train.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from inspection.db.models import JobStatus, RetrainJob, Station, utcnow
from inspection.loop.config import RetrainSettings
from inspection.loop.retrain import RetrainResult, label_watermark, retrain
from inspection.station.config import StationConfig
from inspection.storage import ArtifactStore, LocalArtifactStore
from inspection.worker import Worker

logger = logging.getLogger(__name__)


#: The job the scheduler runs (:func:`inspection.loop.retrain.retrain` by default).
RetrainFn = Callable[..., RetrainResult]


def next_run(schedule: str, after: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """The first time matching cron ``schedule`` strictly after ``after`` (aware, UTC out)."""
    from croniter import croniter

    start = after.astimezone(tz)
    nxt: dt.datetime = croniter(schedule, start).get_next(dt.datetime)
    return nxt.astimezone(dt.UTC)


@dataclass
class TickReport:
    """What one tick did: stations retrained, skipped (and why), queued jobs run."""

    at: dt.datetime
    results: list[RetrainResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


class Scheduler:
    """Decides which stations are due and runs their retraining.

    Args:
        configs: station configs (their ``retrain`` blocks hold the schedules).
        session_factory: database sessions.
        store: artifact store, or a function station config -> store (default: each station's
            ``artifacts_dir``).
        settings: retrain settings for every job.
        tz: time zone of the cron expressions (default: the machine's local zone).
        started_at: when the scheduler started (default: now); stations that never retrained
            count from here, so starting a scheduler does not fire every station at once.
        run: the retrain function (tests inject fakes).
        retrain_kwargs: extra keyword arguments for ``run`` (e.g. ``base_normals``).
    """

    def __init__(
        self,
        configs: Sequence[StationConfig],
        *,
        session_factory: sessionmaker[Session],
        store: ArtifactStore | Callable[[StationConfig], ArtifactStore] | None = None,
        settings: RetrainSettings | None = None,
        tz: dt.tzinfo | str | None = None,
        started_at: dt.datetime | None = None,
        run: RetrainFn = retrain,
        retrain_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.configs = {c.id: c for c in configs}
        self.session_factory = session_factory
        self._store = store
        self.settings = settings or RetrainSettings()
        if isinstance(tz, str):
            tz = ZoneInfo(tz)
        self.tz: dt.tzinfo = tz or dt.datetime.now().astimezone().tzinfo or dt.UTC
        self.started_at = started_at or utcnow()
        self.run = run
        self.retrain_kwargs = dict(retrain_kwargs or {})
        #: station -> when a due run was last skipped (nothing new): wait for the next slot
        self._checked: dict[str, dt.datetime] = {}

    def store_for(self, config: StationConfig) -> ArtifactStore:
        """The artifact store holding ``config``'s frames."""
        if self._store is None:
            return LocalArtifactStore(config.artifacts_dir)
        if isinstance(self._store, ArtifactStore):
            return self._store
        return self._store(config)

    def _last_run(self, session: Session, name: str) -> dt.datetime | None:
        """When the station's newest job was scheduled for (scheduled jobs) or created."""
        job = session.scalar(
            select(RetrainJob)
            .join(Station, Station.id == RetrainJob.station_id)
            .where(Station.name == name)
            .order_by(RetrainJob.id.desc())
            .limit(1)
        )
        if job is None:
            return None
        at = job.created_at
        slot = (job.config or {}).get("scheduled_for")
        if isinstance(slot, str):
            try:
                at = dt.datetime.fromisoformat(slot)
            except ValueError:
                logger.warning("job %s: bad scheduled_for %r", job.id, slot)
        return at

    def due(self, now: dt.datetime) -> list[StationConfig]:
        """Stations with retraining enabled whose next scheduled time is at or before ``now``."""
        out = []
        with self.session_factory() as session:
            for config in self.configs.values():
                schedule = config.retrain.schedule
                if not config.retrain.enabled or schedule is None:
                    continue
                marks = [self.started_at, self._last_run(session, config.id)]
                marks.append(self._checked.get(config.id))
                last = max(m for m in marks if m is not None)
                if next_run(schedule, last, self.tz) <= now:
                    out.append(config)
        return out

    def _unchanged(self, config: StationConfig) -> str | None:
        """Why a scheduled run would learn nothing new (None: it would)."""
        with self.session_factory() as session:
            station = session.scalar(select(Station).where(Station.name == config.id))
            if station is None:
                return "station not registered yet (no inspections)"
            current = label_watermark(session, station.id)
            last_ok = session.scalar(
                select(RetrainJob)
                .where(
                    RetrainJob.station_id == station.id,
                    RetrainJob.status == JobStatus.SUCCEEDED,
                )
                .order_by(RetrainJob.id.desc())
                .limit(1)
            )
        if current == 0:
            return "no operator labels yet"
        if last_ok is not None and last_ok.config.get("label_watermark") == current:
            return f"no label changed since job {last_ok.id}"
        return None

    def _queued(self) -> list[tuple[int, str]]:
        with self.session_factory() as session:
            rows = session.execute(
                select(RetrainJob.id, Station.name)
                .join(Station, Station.id == RetrainJob.station_id)
                .where(RetrainJob.status == JobStatus.QUEUED)
                .order_by(RetrainJob.created_at, RetrainJob.id)
            ).all()
        return [(int(i), str(n)) for i, n in rows]

    def tick(
        self, now: dt.datetime | None = None, cancel: Callable[[], bool] | None = None
    ) -> TickReport:
        """Run every due station's retrain and every queued job; return what happened.

        ``now`` is the scheduler's clock (aware; default: the current time). ``cancel`` is
        polled between a job's stages (the worker passes its stop flag).
        """
        now = now or utcnow()
        report = TickReport(at=now)
        stop = cancel or (lambda: False)
        for config in self.due(now):
            if stop():
                break
            reason = self._unchanged(config)
            if reason is not None:
                self._checked[config.id] = now
                report.skipped[config.id] = reason
                logger.info("scheduler: station %s due but skipped: %s", config.id, reason)
                continue
            logger.info("scheduler: station %s is due (%s)", config.id, config.retrain.schedule)
            trigger = {"trigger": "schedule", "scheduled_for": now.isoformat()}
            report.results.append(self._run(config, None, stop, trigger))
        for job_id, name in self._queued():
            if stop():
                break
            queued_for = self.configs.get(name)
            if queued_for is None:
                report.skipped[f"job {job_id}"] = f"station {name} is not in this scheduler"
                continue
            report.results.append(self._run(queued_for, job_id, stop, {"trigger": "queued"}))
        return report

    def _run(
        self,
        config: StationConfig,
        job_id: int | None,
        stop: Callable[[], bool],
        job_extra: dict[str, Any],
    ) -> RetrainResult:
        return self.run(
            config,
            session_factory=self.session_factory,
            store=self.store_for(config),
            settings=self.settings,
            job_id=job_id,
            cancel=stop,
            actor="scheduler",
            job_extra=job_extra,
            **self.retrain_kwargs,
        )


class SchedulerWorker(Worker):
    """Ticks a :class:`Scheduler` every ``poll_s`` seconds until stopped.

    A stop request during a retrain cancels it between stages (the job ends ``cancelled``).
    """

    def __init__(self, scheduler: Scheduler, poll_s: float = 30.0, name: str = "scheduler") -> None:
        super().__init__(name)
        self.scheduler = scheduler
        self.poll_s = poll_s
        self.ticks = 0
        self.last_report: TickReport | None = None

    def step(self) -> bool:
        try:
            self.last_report = self.scheduler.tick(cancel=self.stop_event.is_set)
        except Exception:
            logger.exception("scheduler tick failed")
        self.ticks += 1
        return not self.sleep(self.poll_s)
