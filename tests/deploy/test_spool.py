"""The station spool: durable records, crash recovery, ordered replay, no loss, no duplicates."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from inspection.db import repo
from inspection.db.models import ArtifactKind, Inspection, Verdict
from inspection.station.persist import DatabaseSink, register_station
from inspection.station.spool import (
    CorruptRecordError,
    Spool,
    SpoolFullError,
    SpoolingSink,
    SpoolLockedError,
    SpoolReplayer,
    decode_record,
    encode_record,
    sink_from_environment,
)
from inspection.worker import Counters
from tests.station.conftest import assert_accounted, make_config, make_station
from tests.station.sources_fakes import ScriptedSource, flat
from tests.station.test_faults import FlakyFactory

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def _item(key: str, station_id: int = 1) -> repo.InspectionData:
    return repo.InspectionData(
        station_id=station_id,
        captured_at=NOW,
        frame_ref=f"frame-{key}",
        model_version_id=None,
        raw_score=0.25,
        norm_score=0.9,
        verdict=Verdict.FAIL,
        latency_ms=3.5,
        idempotency_key=key,
        regions=(repo.RegionData(x=1, y=2, w=3, h=4, area_px=5.0, defect_type="scratch"),),
        artifacts=(
            repo.ArtifactData(
                kind=ArtifactKind.CROP,
                store_key="ab/cd.jpg",
                sha256="0" * 64,
                size_bytes=9,
                region_index=0,
            ),
        ),
    )


def _wait(cond, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_record_round_trip_and_checks() -> None:
    items = [_item("a"), _item("b")]
    data = encode_record(items)
    assert decode_record(data) == items
    for bad in (data[:-1], data + b"x", data[:10], b"", data.replace(b"scratch", b"scrat_h")):
        with pytest.raises(CorruptRecordError):
            decode_record(bad)


def test_append_peek_remove_in_order(tmp_path: Path) -> None:
    with Spool(tmp_path / "sp") as spool:
        for i in range(5):
            spool.append([_item(f"k{i}a"), _item(f"k{i}b")])
        assert spool.stats().records == 5 and spool.stats().items == 10
        first = spool.peek(max_items=4)
        assert [r.items[0].idempotency_key for r in first] == ["k0a", "k1a"]
        spool.remove(first)
        assert spool.stats().items == 6
    with Spool(tmp_path / "sp") as again:  # survives a restart, order kept
        rest = again.peek(max_items=100)
        assert [r.items[0].idempotency_key for r in rest] == ["k2a", "k3a", "k4a"]
        assert again.append([_item("new")]) > rest[-1].seq


def test_half_written_records_are_discarded_and_corrupt_ones_set_aside(tmp_path: Path) -> None:
    directory = tmp_path / "sp"
    with Spool(directory) as spool:
        spool.append([_item("good")])
        spool.append([_item("torn")])
    (directory / "0000000000000002.tmp").write_bytes(encode_record([_item("half")])[:30])
    torn = directory / "0000000000000001.1.rec"
    torn.write_bytes(torn.read_bytes()[:-5])  # a disk that lied about fsync
    spool = Spool(directory)
    spool.open()
    assert spool.counters.get("spool_discarded") == 1
    assert not list(directory.glob("*.tmp"))
    records = spool.peek()
    assert [r.items[0].idempotency_key for r in records] == ["good"]
    assert spool.counters.get("spool_corrupt") == 1
    assert (directory / "corrupt" / torn.name).exists()
    spool.close()


def test_one_process_per_spool(tmp_path: Path) -> None:
    with Spool(tmp_path / "sp"), pytest.raises(SpoolLockedError):
        Spool(tmp_path / "sp").open()


def test_size_limit(tmp_path: Path) -> None:
    with Spool(tmp_path / "sp", max_bytes=len(encode_record([_item("a")])) + 10) as spool:
        spool.append([_item("a")])
        with pytest.raises(SpoolFullError):
            spool.append([_item("b")])


WRITER = textwrap.dedent(
    """
    import sys, datetime as dt
    from inspection.db import repo
    from inspection.station.spool import Spool
    spool = Spool(sys.argv[1]); spool.open()
    start = int(sys.argv[2])
    for i in range(start, start + 100000):
        item = repo.InspectionData(
            station_id=1, captured_at=dt.datetime.now(dt.UTC), frame_ref="x" * 2000,
            model_version_id=None, raw_score=0.0, norm_score=0.0, verdict="pass",
            latency_ms=0.0, idempotency_key=f"k{i}")
        spool.append([item] * 1 + [item.__class__(**{**item.__dict__, "idempotency_key": f"k{i}b"})])
        print(i, flush=True)
    """
)


@pytest.mark.slow
def test_sigkill_mid_append_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """A writer is killed with SIGKILL at random moments, five times; every acknowledged
    record is complete after recovery, no record is half there, none is there twice."""
    directory = tmp_path / "sp"
    acknowledged: list[int] = []
    start = 0
    for round_ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(directory), str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        for _ in range(20 + 7 * round_):  # wait for some acknowledged appends
            acknowledged.append(int(proc.stdout.readline()))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        start = acknowledged[-1] + 1000
    with Spool(directory) as spool:
        keys = [i.idempotency_key for r in spool.peek(max_items=10**6) for i in r.items]
        assert spool.counters.get("spool_corrupt") == 0
    assert len(keys) == len(set(keys))
    assert {f"k{i}" for i in acknowledged} <= set(keys)
    assert {f"k{i}b" for i in acknowledged} <= set(keys)
    for key in keys:  # both rows of every record, never one without the other
        twin = key[:-1] if key.endswith("b") else key + "b"
        assert twin in keys


def _station(factory: sessionmaker[Session], tmp_path: Path) -> int:
    cfg = make_config(tmp_path)
    with factory() as s, s.begin():
        return register_station(s, cfg).station_id


def _rows(factory: sessionmaker[Session]) -> list[str]:
    with factory() as s:
        return list(s.scalars(select(Inspection.idempotency_key).order_by(Inspection.id)))


def test_replay_is_idempotent_after_a_crash_between_commit_and_delete(tmp_path: Path, db) -> None:
    _, factory = db
    sid = _station(factory, tmp_path)
    counters = Counters()
    with Spool(tmp_path / "sp", counters=counters) as spool:
        spool.append([_item("a", sid), _item("b", sid)])
        spool.append([_item("c", sid)])
        records = spool.peek()
        DatabaseSink(factory).write([i for r in records for i in r.items])  # committed, "crash"
        replayer = SpoolReplayer("r", spool, DatabaseSink(factory), counters)
        assert replayer.replay_once() == 3
        assert len(spool) == 0
    assert _rows(factory) == ["a", "b", "c"]


class RefusingSink:
    """Refuses rows whose key starts with ``bad`` for good (an integrity error)."""

    def __init__(self, inner: DatabaseSink) -> None:
        self.inner = inner

    def write(self, items) -> None:
        if any(i.idempotency_key.startswith("bad") for i in items):
            raise IntegrityError("INSERT", {}, ValueError("violates a constraint"))
        self.inner.write(items)


def test_a_record_refused_for_good_is_set_aside(tmp_path: Path, db) -> None:
    _, factory = db
    sid = _station(factory, tmp_path)
    counters = Counters()
    with Spool(tmp_path / "sp", counters=counters) as spool:
        spool.append([_item("a", sid)])
        spool.append([_item("bad", sid)])
        spool.append([_item("c", sid)])
        replayer = SpoolReplayer("r", spool, RefusingSink(DatabaseSink(factory)), counters)
        replayer.replay_once()
        assert len(spool) == 0
    assert _rows(factory) == ["a", "c"]
    assert counters.get("replay_rejected") == 1
    assert len(list((tmp_path / "sp" / "rejected").iterdir())) == 1


def test_station_spools_while_the_database_is_down_and_replays(
    tmp_path: Path, db, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, factory = db
    monkeypatch.setenv("INSPECTION_SPOOL_DIR", str(tmp_path / "spool"))
    flaky = FlakyFactory(factory)
    gate = threading.Semaphore(0)
    source = ScriptedSource([flat(10 + i) for i in range(30)], gate=gate)
    cfg = make_config(tmp_path, pipeline={"persist_batch": 4, "persist_retry_s": 0.1})
    station = make_station(cfg, flaky, source=source)  # type: ignore[arg-type]
    assert isinstance(station.sink, SpoolingSink)
    station.start()
    gate.release(10)
    _wait(lambda: station.counters.get("persisted") == 10)
    flaky.down = True
    gate.release(10)
    _wait(lambda: station.counters.get("spooled") == 10)
    assert station.sink.spool.stats().items == 10
    flaky.down = False
    gate.release(10)
    _wait(lambda: station.capture_finished)
    stats = station.stop()
    assert_accounted(stats)
    c = stats["counters"]
    assert c["persist_failures"] == 0 and c["persisted"] == 30
    assert c["replayed"] >= 10 and c["spooled"] >= 10
    keys = _rows(factory)
    assert len(keys) == 30 and len(set(keys)) == 30
    assert not list((tmp_path / "spool" / "s1").glob("*.rec"))


def test_a_station_replays_what_an_earlier_run_left(
    tmp_path: Path, db, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, factory = db
    sid = _station(factory, tmp_path)
    with Spool(tmp_path / "spool" / "s1") as spool:
        spool.append([_item("left-1", sid), _item("left-2", sid)])
    monkeypatch.setenv("INSPECTION_SPOOL_DIR", str(tmp_path / "spool"))
    station = make_station(make_config(tmp_path), factory, source=ScriptedSource([flat(10)] * 3))
    stats = station.run()
    # the backlog goes first; new results queue behind it while it lasts (order kept) and go
    # straight to the database once it is empty, so how many are spooled depends on timing
    c = stats["counters"]
    assert c["replayed"] == 2 + c["spooled"] and c["spooled"] <= 3
    keys = _rows(factory)
    assert keys[:2] == ["left-1", "left-2"] and len(keys) == 5


def test_sink_from_environment(tmp_path: Path) -> None:
    primary = DatabaseSink(None)  # type: ignore[arg-type]
    assert sink_from_environment("s", primary, Counters(), {}) is primary
    env = {"INSPECTION_SPOOL_DIR": str(tmp_path), "INSPECTION_SPOOL_MAX_MB": "1.5"}
    sink = sink_from_environment("s", primary, Counters(), env)
    assert isinstance(sink, SpoolingSink)
    assert sink.spool.directory == tmp_path / "s"
    assert sink.spool.max_bytes == int(1.5 * 1024 * 1024)
    with pytest.raises(Exception, match="not a number"):
        sink_from_environment("s", primary, Counters(), {**env, "INSPECTION_SPOOL_MAX_MB": "x"})
