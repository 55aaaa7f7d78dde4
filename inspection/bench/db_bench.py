"""``inspection bench db``: insert and query 100k inspections on SQLite and PostgreSQL.

Everything goes through :mod:`inspection.db.repo` (the code stations and the API run), on a
database built by the Alembic migrations:

* **insert**: ``insert_new_inspections`` (the stations' bulk path for new keys; spool replays
  and key conflicts go through ``insert_inspections``) with regions
  (30 % of frames are defects with 1-3 regions,
  3 % of those of unknown type) and two artifact rows (frame, heatmap) per inspection,
  ``batch_size`` inspections per transaction; reported as inspections/s.
* **single-commit insert**: ``record_inspection``, one ORM transaction per inspection
  (durable commit each time: a station whose results arrive one at a time), on a smaller
  sample.
* **labels**: ``add_label`` on 10 % of the inspections.
* **queries**: ``review_queue`` (first page of a station, a filtered page, the next keyset
  page) and ``list_inspections``, each repeated; p50/p95 latency in ms including ORM loading of
  regions and artifacts.

SQLite runs on a file in a temporary folder (WAL, ``synchronous=NORMAL``); PostgreSQL is a
throwaway local cluster with durable settings (fsync on), see
:func:`inspection.db.testing.start_temporary_postgres`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from inspection.bench.report import markdown_table, stamp, write_results
from inspection.db import migrate, repo
from inspection.db.engine import make_engine, make_session_factory
from inspection.db.models import ArtifactKind, Inspection, Role, Verdict
from inspection.db.testing import postgres_unavailable_reason, start_temporary_postgres
from inspection.storage import content_key

log = logging.getLogger(__name__)

NAME = "db"
COLUMNS = [
    "engine",
    "insert_rows_per_s",
    "single_commit_rows_per_s",
    "labels_per_s",
    "review_p50_ms",
    "review_p95_ms",
    "review_filtered_p95_ms",
    "review_next_page_p95_ms",
    "list_p95_ms",
    "db_mib",
]
DEFECT_TYPES = ["crack", "blowhole", "break", "fray", "uneven"]
T_START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of one benchmark run."""

    n_inspections: int = 100_000
    batch_size: int = 200
    n_single_commit: int = 2_000
    label_fraction: float = 0.10
    n_queries: int = 200
    n_stations: int = 4
    seed: int = 0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _inspection(
    rng: random.Random, station_id: int, index: int, model_id: int
) -> repo.InspectionData:
    defect = rng.random() < 0.3
    score = rng.uniform(0.5, 1.0) if defect else rng.uniform(0.0, 0.5)
    regions = []
    if defect:
        for _ in range(rng.randint(1, 3)):
            unknown = rng.random() < 0.03
            regions.append(
                repo.RegionData(
                    x=rng.randrange(1000),
                    y=rng.randrange(1000),
                    w=rng.randrange(2, 120),
                    h=rng.randrange(2, 120),
                    area_px=rng.uniform(4, 8000),
                    score=score,
                    defect_type=None if unknown else rng.choice(DEFECT_TYPES),
                    confidence=rng.random(),
                    is_unknown=unknown,
                )
            )
    frame_sha = uuid.UUID(int=rng.getrandbits(128)).hex * 2
    heat_sha = uuid.UUID(int=rng.getrandbits(128)).hex * 2
    return repo.InspectionData(
        station_id=station_id,
        captured_at=T_START + dt.timedelta(seconds=index),
        frame_ref=f"frames/{station_id}/{index}.png",
        model_version_id=model_id,
        raw_score=score * 4.0,
        norm_score=score,
        verdict=Verdict.FAIL if defect else Verdict.PASS,
        latency_ms=rng.uniform(8, 40),
        idempotency_key=f"{index:012d}",
        regions=regions,
        artifacts=[
            repo.ArtifactData(
                kind=ArtifactKind.FRAME,
                store_key=content_key(frame_sha, "png"),
                sha256=frame_sha,
                size_bytes=rng.randrange(200_000, 900_000),
                media_type="image/png",
            ),
            repo.ArtifactData(
                kind=ArtifactKind.HEATMAP,
                store_key=content_key(heat_sha, "npz"),
                sha256=heat_sha,
                size_bytes=rng.randrange(20_000, 90_000),
                heatmap_max=score,
                heatmap_mean=score / 5,
            ),
        ],
    )


def _timed_queries(
    factory: sessionmaker[Session], n: int, query: Callable[[Session, random.Random], object]
) -> list[float]:
    rng = random.Random(1)
    times: list[float] = []
    with factory() as session:
        for _ in range(n):
            session.expunge_all()
            start = time.perf_counter()
            query(session, rng)
            times.append((time.perf_counter() - start) * 1000)
            session.rollback()
    return times


def _seed_plant(
    factory: sessionmaker[Session], config: BenchConfig
) -> tuple[list[int], list[int], int]:
    """Stations, operators and one model version: their ids."""
    with factory.begin() as session:
        stations = [
            repo.upsert_station(session, name=f"bench-{i}", line_name="bench").id
            for i in range(config.n_stations)
        ]
        users = [
            repo.create_user(session, username=f"op{i}", role=Role.OPERATOR).id for i in range(3)
        ]
        model_id = repo.register_model_version(
            session,
            station_id=stations[0],
            name="bench",
            detector_type="patchcore",
            artifact_path="models/bench",
        ).id
    return stations, users, model_id


def _time_inserts(
    engine: Engine,
    config: BenchConfig,
    rng: random.Random,
    stations: list[int],
    model_id: int,
) -> tuple[float, list[int], float]:
    """Seconds to insert ``config.n_inspections`` in batches of ``config.batch_size``, the
    inserted ids, and seconds for ``config.n_single_commit`` more, one transaction each."""
    factory = make_session_factory(engine)
    start = time.perf_counter()
    for batch_start in range(0, config.n_inspections, config.batch_size):
        items = [
            _inspection(rng, stations[index % len(stations)], index, model_id)
            for index in range(
                batch_start, min(batch_start + config.batch_size, config.n_inspections)
            )
        ]
        with factory.begin() as session:
            repo.insert_new_inspections(session, items)
    insert_s = time.perf_counter() - start
    with factory() as session:
        ids = list(session.scalars(select(Inspection.id).order_by(Inspection.id)))
    log.info("%s: %d inspections in %.1f s", engine.dialect.name, len(ids), insert_s)
    start = time.perf_counter()
    for offset in range(config.n_single_commit):
        index = config.n_inspections + offset
        item = _inspection(rng, stations[index % len(stations)], index, model_id)
        with factory.begin() as session:
            repo.record_inspection(session, item)
    return insert_s, ids, time.perf_counter() - start


def _time_labels(
    factory: sessionmaker[Session],
    labelled: list[int],
    batch_size: int,
    rng: random.Random,
    users: list[int],
) -> float:
    """Seconds to label ``labelled``, batched like a busy review session."""
    start = time.perf_counter()
    for batch_start in range(0, len(labelled), batch_size):
        with factory.begin() as session:
            for inspection_id in labelled[batch_start : batch_start + batch_size]:
                repo.add_label(
                    session,
                    inspection_id=inspection_id,
                    user_id=rng.choice(users),
                    verdict=rng.choice([Verdict.PASS, Verdict.FAIL]),
                    defect_type=rng.choice([None, *DEFECT_TYPES]),
                )
    return time.perf_counter() - start


def _analyze(engine: Engine) -> None:
    """Planner statistics, as a maintained database has them."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))


def _time_reads(
    reader: sessionmaker[Session], config: BenchConfig, stations: list[int]
) -> dict[str, list[float]]:
    """Milliseconds of each read: queue first page, filtered, next page, listing."""

    def first_page(session: Session, qrng: random.Random) -> object:
        return repo.review_queue(
            session, repo.QueueFilters(station_id=qrng.choice(stations)), limit=50
        )

    def filtered(session: Session, qrng: random.Random) -> object:
        since = T_START + dt.timedelta(seconds=qrng.randrange(config.n_inspections // 2))
        queue = repo.QueueFilters(
            station_id=qrng.choice(stations),
            since=since,
            until=since + dt.timedelta(hours=6),
            min_score=0.6,
            defect_type=qrng.choice(DEFECT_TYPES),
        )
        return repo.review_queue(session, queue, limit=50)

    cursors: dict[int, str | None] = {}
    with reader() as session:
        for station_id in stations:
            cursors[station_id] = repo.review_queue(
                session, repo.QueueFilters(station_id=station_id), limit=50
            ).next_cursor

    def next_page(session: Session, qrng: random.Random) -> object:
        station_id = qrng.choice(stations)
        return repo.review_queue(
            session, repo.QueueFilters(station_id=station_id), limit=50, cursor=cursors[station_id]
        )

    def listing(session: Session, qrng: random.Random) -> object:
        return repo.list_inspections(session, station_id=qrng.choice(stations), limit=50)

    return {
        "review": _timed_queries(reader, config.n_queries, first_page),
        "review_filtered": _timed_queries(reader, config.n_queries, filtered),
        "review_next_page": _timed_queries(reader, config.n_queries, next_page),
        "list": _timed_queries(reader, config.n_queries, listing),
    }


def bench_engine(engine: Engine, config: BenchConfig) -> dict[str, Any]:
    """Run the insert/label/query measurements on one migrated, empty database."""
    rng = random.Random(config.seed)
    factory = make_session_factory(engine)
    reader = make_session_factory(engine, read_only=True)
    stations, users, model_id = _seed_plant(factory, config)
    insert_s, ids, single_s = _time_inserts(engine, config, rng, stations, model_id)
    labelled = rng.sample(ids, int(len(ids) * config.label_fraction))
    labels_s = _time_labels(factory, labelled, config.batch_size, rng, users)
    _analyze(engine)
    queries = _time_reads(reader, config, stations)
    with reader() as session:
        counts = repo.table_counts(session)
    total = config.n_inspections
    result: dict[str, Any] = {
        "engine": engine.dialect.name,
        "server_version": ".".join(str(v) for v in engine.dialect.server_version_info or ()),
        "insert_rows_per_s": total / insert_s,
        "insert_seconds": insert_s,
        "single_commit_rows_per_s": config.n_single_commit / single_s,
        "labels_per_s": len(labelled) / labels_s if labelled else None,
        "rows": {k: counts[k] for k in ("inspection", "defect_region", "artifact")}
        | {"operator_label": counts["operator_label"]},
        "db_mib": _db_size_mib(engine),
    }
    for name, times in queries.items():
        result[f"{name}_p50_ms"] = _percentile(times, 50)
        result[f"{name}_p95_ms"] = _percentile(times, 95)
        result[f"{name}_mean_ms"] = statistics.fmean(times)
    return result


def _db_size_mib(engine: Engine) -> float:
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar()
        else:
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar() or 0
            page_size = conn.exec_driver_sql("PRAGMA page_size").scalar() or 0
            size = int(pages) * int(page_size)
    return float(size or 0) / (1 << 20)


@contextlib.contextmanager
def _migrated(url: str) -> Iterator[Engine]:
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        yield engine
    finally:
        engine.dispose()


def run(
    config: BenchConfig,
    *,
    engines: tuple[str, ...] = ("sqlite", "postgresql"),
    results_dir: Path = Path("bench/results"),
    write: bool = True,
) -> dict[str, Any]:
    """Benchmark each engine; write ``db.json``/``db.md`` into ``results_dir`` when ``write``.

    PostgreSQL is skipped (and the reason recorded) when no server binaries are installed.
    """
    payload: dict[str, Any] = {
        **stamp(),
        "config": config.__dict__,
        # The machine may be shared: record how busy it was (1-min load average, start/end).
        "load_avg_1m": {"start": os.getloadavg()[0]},
        "engines": {},
        "skipped": {},
    }
    with tempfile.TemporaryDirectory(prefix="inspection-dbbench-") as tmp:
        if "sqlite" in engines:
            with _migrated(f"sqlite:///{Path(tmp) / 'bench.db'}") as engine:
                payload["engines"]["sqlite"] = bench_engine(engine, config)
        if "postgresql" in engines:
            reason = postgres_unavailable_reason()
            if reason is not None:
                payload["skipped"]["postgresql"] = reason
            else:
                with (
                    start_temporary_postgres(Path(tmp) / "pg", durable=True) as url,
                    _migrated(url) as engine,
                ):
                    payload["engines"]["postgresql"] = bench_engine(engine, config)
    payload["load_avg_1m"]["end"] = os.getloadavg()[0]
    if write:
        rows = list(payload["engines"].values())
        notes = [
            "",
            f"{config.n_inspections} inspections ({config.batch_size} per transaction) with "
            "regions and 2 artifact rows each, "
            f"{int(config.label_fraction * 100)} % labelled; single-commit rate over "
            f"{config.n_single_commit} inspections; query latencies over {config.n_queries} "
            "runs each, ORM loading included. SQLite: WAL, synchronous=NORMAL; PostgreSQL: "
            "local throwaway cluster, fsync on.",
            "",
            "1-min load average at start/end: "
            f"{payload['load_avg_1m']['start']:.1f}/{payload['load_avg_1m']['end']:.1f} "
            "(a shared machine: other jobs compete for the CPUs).",
        ]
        notes += [f"\nSkipped {k}: {v}" for k, v in payload["skipped"].items()]
        write_results(
            NAME, payload, markdown_table(rows, COLUMNS) + "\n" + "\n".join(notes), results_dir
        )
    return payload
