"""Job records: one running retrain per station (database-enforced), progress, cancellation."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from inspection.db import repo
from inspection.db.engine import run_in_transaction
from inspection.db.models import JobStatus, RetrainJob
from inspection.errors import InvalidStateError
from inspection.loop.jobs import (
    JobReporter,
    RetrainBusyError,
    RetrainCancelled,
    request_cancel_station,
    start_job,
)

from .conftest import LoopDb


def _start(db: LoopDb, job_id: int | None = None) -> int:
    return run_in_transaction(
        db.factory,
        lambda s: (
            start_job(
                s,
                station_id=db.station_id,
                config={"seed": 1},
                base_model_version_id=None,
                detector_type="padim",
                job_id=job_id,
            ).id
        ),
    )


def test_one_running_job_per_station(loop_db: LoopDb) -> None:
    first = _start(loop_db)
    with pytest.raises(RetrainBusyError, match=f"job {first} running"):
        _start(loop_db)
    reporter = JobReporter(loop_db.factory, first, ("a", "b"))
    reporter.finish(JobStatus.SUCCEEDED, metrics={"x": 1})
    second = _start(loop_db)
    assert second != first
    with loop_db.factory() as session:
        job = session.get(RetrainJob, first)
        assert job is not None
        assert job.status == JobStatus.SUCCEEDED
        assert job.config == {"seed": 1}


def test_concurrent_starts_get_one_job(loop_db: LoopDb) -> None:
    results: list[str] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        try:
            _start(loop_db)
            results.append("started")
        except RetrainBusyError:
            results.append("busy")

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["busy", "busy", "busy", "started"]


def test_abandoned_job_no_longer_blocks(loop_db: LoopDb) -> None:
    stale = _start(loop_db)

    def age(session) -> None:  # type: ignore[no-untyped-def]
        job = session.get(RetrainJob, stale)
        job.started_at = job.started_at - dt.timedelta(hours=13)

    run_in_transaction(loop_db.factory, age)
    fresh = _start(loop_db)
    with loop_db.factory() as session:
        job = session.get(RetrainJob, stale)
        assert job is not None
        assert job.status == JobStatus.FAILED
        assert "abandoned" in (job.error or "")
    assert fresh != stale


def test_claim_queued_job(loop_db: LoopDb) -> None:
    queued = run_in_transaction(
        loop_db.factory, lambda s: repo.create_retrain_job(s, station_id=loop_db.station_id).id
    )
    assert _start(loop_db, job_id=queued) == queued
    reporter = JobReporter(loop_db.factory, queued, ("a",))
    reporter.finish(JobStatus.FAILED, error="boom")
    with pytest.raises(InvalidStateError, match="not queued"):
        _start(loop_db, job_id=queued)


def test_progress_log_and_cancel(loop_db: LoopDb) -> None:
    job_id = _start(loop_db)
    reporter = JobReporter(loop_db.factory, job_id, ("assemble", "train", "export"))
    reporter.stage("train", 1, 2)
    reporter.check_cancel()  # nothing requested yet
    with loop_db.factory() as session:
        job = session.get(RetrainJob, job_id)
        assert job is not None
        assert job.metrics["progress"] == {
            "stage": "train",
            "done": 1,
            "total": 2,
            "fraction": pytest.approx(0.5),
        }
        assert "stage train (1/2)" in job.log
    ids = run_in_transaction(
        loop_db.factory,
        lambda s: request_cancel_station(s, station_id=loop_db.station_id, requested_by="test"),
    )
    assert ids == [job_id]
    with pytest.raises(RetrainCancelled):
        reporter.check_cancel()
