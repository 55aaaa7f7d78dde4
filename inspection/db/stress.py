"""Concurrent-writer check: station processes and an API process share one database.

Each station process records inspections (with regions and artifact rows) as fast as it can,
replaying some earlier keys like a spool would; the API process reads the review queue, adds
operator labels and changes thresholds. Every process uses its own engine, one short
transaction per operation, and no retries, so any "database is locked" would reach the caller
and be reported. Afterwards the database is compared with what each writer says it committed.
Used by ``tests/db/test_concurrency.py``.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import random
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from inspection.db import migrate, repo
from inspection.db.engine import make_engine, make_session_factory
from inspection.db.models import ArtifactKind, Inspection, OperatorLabel, Role, Station, Verdict
from inspection.errors import NotFoundError
from inspection.storage import content_key

API_USER = "stress-operator"


@dataclass
class WriterReport:
    """What one writer process did; ``errors`` holds every exception a caller would have seen."""

    name: str
    committed_keys: list[str] = field(default_factory=list)
    replays: int = 0
    labels: int = 0
    threshold_changes: int = 0
    reads: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class StressResult:
    """Writers' reports and how the database compares with them."""

    reports: list[WriterReport]
    inspections_in_db: int
    labels_in_db: int
    missing_keys: list[str]
    unexpected_keys: list[str]

    @property
    def errors(self) -> list[str]:
        """Every error any writer saw, prefixed with the writer's name."""
        return [f"{r.name}: {e}" for r in self.reports for e in r.errors]

    @property
    def committed(self) -> int:
        """Inspections the stations say they committed."""
        return sum(len(r.committed_keys) for r in self.reports)


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def prepare(url: str, station_names: list[str]) -> None:
    """Migrate the database and create the line, stations and the API's operator."""
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        with make_session_factory(engine).begin() as session:
            for name in station_names:
                repo.upsert_station(session, name=name, line_name="stress-line")
            if repo.get_user_by_username(session, API_USER) is None:
                repo.create_user(session, username=API_USER, role=Role.OPERATOR)
    finally:
        engine.dispose()


def station_writer(url: str, station_name: str, duration_s: float, seed: int) -> WriterReport:
    """Record inspections for ``duration_s`` seconds, one transaction each."""
    rng = random.Random(seed)
    report = WriterReport(name=f"station:{station_name}")
    engine = make_engine(url)
    factory = make_session_factory(engine)
    try:
        with factory.begin() as session:
            station_id = repo.get_station_by_name(session, station_name).id
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline:
            replay = bool(report.committed_keys) and rng.random() < 0.05
            key = rng.choice(report.committed_keys) if replay else uuid.uuid4().hex
            score = rng.random()
            regions = [
                repo.RegionData(
                    x=rng.randrange(500),
                    y=rng.randrange(500),
                    w=rng.randrange(1, 60),
                    h=rng.randrange(1, 60),
                    area_px=rng.uniform(1, 2000),
                    score=score,
                    defect_type=rng.choice(["crack", "blowhole", "fray", None]),
                    is_unknown=rng.random() < 0.05,
                )
                for _ in range(rng.randrange(3) if score > 0.5 else 0)
            ]
            sha = uuid.uuid4().hex * 2
            artifacts = [
                repo.ArtifactData(
                    kind=ArtifactKind.FRAME,
                    store_key=content_key(sha, "png"),
                    sha256=sha,
                    size_bytes=rng.randrange(10_000, 500_000),
                )
            ]
            try:
                with factory.begin() as session:
                    item = repo.InspectionData(
                        station_id=station_id,
                        captured_at=dt.datetime.now(dt.UTC),
                        frame_ref=f"frames/{key}.png",
                        model_version_id=None,
                        raw_score=score * 5,
                        norm_score=score,
                        verdict=Verdict.FAIL if score > 0.5 else Verdict.PASS,
                        latency_ms=rng.uniform(5, 40),
                        idempotency_key=key,
                        regions=regions,
                        artifacts=artifacts,
                    )
                    repo.record_inspection(session, item)
            except SQLAlchemyError as exc:
                report.errors.append(_error_text(exc))
                continue
            if replay:
                report.replays += 1
            else:
                report.committed_keys.append(key)
    finally:
        engine.dispose()
    return report


def api_writer(url: str, station_names: list[str], duration_s: float, seed: int) -> WriterReport:
    """Review, label and retune thresholds for ``duration_s`` seconds, like the web API."""
    rng = random.Random(seed)
    report = WriterReport(name="api")
    engine = make_engine(url)
    factory = make_session_factory(engine)
    reader = make_session_factory(engine, read_only=True)
    try:
        with factory.begin() as session:
            user = repo.get_user_by_username(session, API_USER)
            if user is None:
                raise NotFoundError(f"user {API_USER!r} missing; run prepare() first")
            user_id = user.id
            station_ids = [repo.get_station_by_name(session, n).id for n in station_names]
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline:
            try:
                with reader() as session:
                    page = repo.review_queue(
                        session, repo.QueueFilters(station_id=rng.choice(station_ids)), limit=20
                    )
                    candidates = [item.id for item in page.items]
                report.reads += 1
                if candidates:
                    with factory.begin() as session:
                        repo.add_label(
                            session,
                            inspection_id=rng.choice(candidates),
                            user_id=user_id,
                            verdict=rng.choice([Verdict.PASS, Verdict.FAIL]),
                            defect_type=rng.choice([None, "crack", "new-type"]),
                        )
                    report.labels += 1
                if rng.random() < 0.1:
                    with factory.begin() as session:
                        repo.set_station_thresholds(
                            session,
                            station_id=rng.choice(station_ids),
                            image_threshold=rng.uniform(0.3, 0.7),
                            pixel_threshold=rng.uniform(0.3, 0.7),
                            changed_by=user_id,
                        )
                    report.threshold_changes += 1
            except SQLAlchemyError as exc:
                report.errors.append(_error_text(exc))
            time.sleep(0.005)  # an API serves people, not a tight loop
    finally:
        engine.dispose()
    return report


def run_concurrent_writers(
    url: str, *, duration_s: float, n_stations: int = 2, seed: int = 0
) -> StressResult:
    """Run ``n_stations`` station processes and one API process for ``duration_s`` seconds."""
    names = [f"stress-{i}" for i in range(n_stations)]
    prepare(url, names)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n_stations + 1, mp_context=context) as pool:
        futures = [
            pool.submit(station_writer, url, name, duration_s, seed + i)
            for i, name in enumerate(names)
        ]
        futures.append(pool.submit(api_writer, url, names, duration_s, seed + 1000))
        reports = [f.result() for f in futures]
    engine = make_engine(url)
    try:
        with make_session_factory(engine, read_only=True)() as session:
            stored = set(
                session.scalars(
                    select(Inspection.idempotency_key)
                    .join(Station, Station.id == Inspection.station_id)
                    .where(Station.name.in_(names))
                )
            )
            inspections = int(session.scalar(select(func.count(Inspection.id))) or 0)
            labels = int(session.scalar(select(func.count(OperatorLabel.id))) or 0)
    finally:
        engine.dispose()
    committed = {k for r in reports for k in r.committed_keys}
    return StressResult(
        reports=reports,
        inspections_in_db=inspections,
        labels_in_db=labels,
        missing_keys=sorted(committed - stored),
        unexpected_keys=sorted(stored - committed),
    )
