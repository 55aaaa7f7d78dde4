"""Scheduler: cron due times with a fake clock, skip when no label changed, queued jobs, worker."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from inspection.db import repo
from inspection.db.engine import run_in_transaction
from inspection.db.models import JobStatus
from inspection.loop.jobs import JobReporter, start_job
from inspection.loop.retrain import RetrainResult, label_watermark
from inspection.loop.scheduler import Scheduler, SchedulerWorker, next_run
from inspection.station.config import StationConfig, parse_station_config

from .conftest import LoopDb, label, record

UTC = dt.UTC
START = dt.datetime(2025, 3, 1, 0, 0, tzinfo=UTC)


def _config(tmp_path: Path, name: str, schedule: str | None, enabled: bool = True) -> StationConfig:
    return parse_station_config(
        {
            "id": name,
            "line": "l1",
            "camera": {"type": "synthetic", "size": 32},
            "detector": {"source": "database"},
            "retrain": {"schedule": schedule, "enabled": enabled},
            "artifacts_dir": str(tmp_path / "artifacts"),
        }
    )


class FakeRetrain:
    """Records calls and leaves a succeeded job, like the real retrain does."""

    def __init__(self, db: LoopDb) -> None:
        self.db = db
        self.calls: list[dict[str, Any]] = []

    def __call__(self, station: StationConfig, **kwargs: Any) -> RetrainResult:
        self.calls.append({"station": station.id, **kwargs})
        factory = kwargs["session_factory"]

        def begin(session) -> int:  # type: ignore[no-untyped-def]
            sid = repo.get_station_by_name(session, station.id).id
            config = {**kwargs["job_extra"], "label_watermark": label_watermark(session, sid)}
            return start_job(
                session,
                station_id=sid,
                config=config,
                base_model_version_id=None,
                detector_type="padim",
                job_id=kwargs["job_id"],
            ).id

        job_id = run_in_transaction(factory, begin)
        JobReporter(factory, job_id, ("x",)).finish(JobStatus.SUCCEEDED)
        return RetrainResult(station.id, job_id, "succeeded")


def test_next_run_in_time_zone() -> None:
    after = dt.datetime(2025, 3, 1, 0, 30, tzinfo=UTC)
    assert next_run("0 2 * * *", after, UTC) == dt.datetime(2025, 3, 1, 2, 0, tzinfo=UTC)
    from zoneinfo import ZoneInfo

    berlin = next_run("0 2 * * *", after, ZoneInfo("Europe/Berlin"))
    assert berlin == dt.datetime(2025, 3, 1, 1, 0, tzinfo=UTC)  # 02:00 CET


def test_ticks_follow_the_schedule_and_the_labels(loop_db: LoopDb, tmp_path: Path) -> None:
    configs = [
        _config(tmp_path, "s1", "0 2 * * *"),
        _config(tmp_path, "s2", None),
        _config(tmp_path, "s3", "0 2 * * *", enabled=False),
    ]
    fake = FakeRetrain(loop_db)
    sched = Scheduler(configs, session_factory=loop_db.factory, tz=UTC, started_at=START, run=fake)
    assert sched.tick(START + dt.timedelta(hours=1, minutes=59)).results == []
    report = sched.tick(START + dt.timedelta(hours=2, seconds=5))
    assert report.skipped == {"s1": "no operator labels yet"}
    assert fake.calls == []
    inspection = record(loop_db, None, flagged=True)
    label(loop_db, inspection, "fail", "crack")
    # labelled at 10:00: waits for the next slot instead of firing at once
    assert sched.tick(START + dt.timedelta(hours=10)).results == []
    night2 = START + dt.timedelta(days=1, hours=2, seconds=1)
    report = sched.tick(night2)
    assert [r.station for r in report.results] == ["s1"]
    assert fake.calls[0]["job_extra"] == {
        "trigger": "schedule",
        "scheduled_for": night2.isoformat(),
    }
    assert fake.calls[0]["actor"] == "scheduler"
    assert sched.tick(night2 + dt.timedelta(minutes=5)).results == []  # same slot: done
    report = sched.tick(START + dt.timedelta(days=2, hours=2, seconds=1))
    assert report.skipped["s1"].startswith("no label changed since job")
    label(loop_db, inspection, "fail", "hole", user=1)
    report = sched.tick(START + dt.timedelta(days=3, hours=2, seconds=1))
    assert [r.station for r in report.results] == ["s1"]


def test_tick_runs_jobs_queued_from_the_ui(loop_db: LoopDb, tmp_path: Path) -> None:
    fake = FakeRetrain(loop_db)
    sched = Scheduler(
        [_config(tmp_path, "s1", None)],
        session_factory=loop_db.factory,
        tz=UTC,
        started_at=START,
        run=fake,
    )
    queued = run_in_transaction(
        loop_db.factory, lambda s: repo.create_retrain_job(s, station_id=loop_db.station_id).id
    )
    report = sched.tick(START + dt.timedelta(minutes=1))
    assert [r.job_id for r in report.results] == [queued]
    assert fake.calls[0]["job_id"] == queued
    assert fake.calls[0]["job_extra"] == {"trigger": "queued"}
    assert sched.tick(START + dt.timedelta(minutes=2)).results == []


def test_worker_ticks_until_stopped(loop_db: LoopDb, tmp_path: Path) -> None:
    sched = Scheduler(
        [_config(tmp_path, "s1", "* * * * *")],
        session_factory=loop_db.factory,
        tz=UTC,
        run=FakeRetrain(loop_db),
    )
    worker = SchedulerWorker(sched, poll_s=0.01)
    worker.start()
    while worker.ticks < 3:
        worker.sleep(0.01)
    worker.stop()
    assert worker.join(5.0)
    assert worker.error is None
