"""Fault tests: the station keeps running and its counters account for every frame.

* the camera vanishes and comes back (scripted source; a watched folder that disappears),
* corrupt and truncated files in a watched folder,
* a slow database, a briefly unavailable one, and one that stays down.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from inspection.errors import CameraError, FrameError
from inspection.station.persist import DatabaseSink
from tests.station.conftest import (
    FakeLoader,
    assert_accounted,
    count_rows,
    make_config,
    make_station,
)
from tests.station.sources_fakes import ScriptedSource, flat

FAST_RECONNECT = {"reconnect": {"initial_s": 0.01, "max_s": 0.05}}


def test_camera_vanishes_and_returns(tmp_path: Path, db) -> None:
    _, factory = db
    steps = [flat(10)] * 3 + [CameraError("cable pulled")] + [flat(10)] * 3
    source = ScriptedSource(steps, fail_opens=2)
    station = make_station(make_config(tmp_path, camera=FAST_RECONNECT), factory, source=source)
    stats = station.run()
    assert_accounted(stats)
    c = stats["counters"]
    assert c["reconnects"] == 1 and c["reconnect_attempts"] == 3
    assert c["captured"] == 6 and c["persisted"] == 6
    assert source.opens == 4  # first open, two failed reopen attempts, the successful one


def test_bad_frame_from_camera_is_skipped(tmp_path: Path, db) -> None:
    _, factory = db
    steps = [flat(10), FrameError("garbled frame"), flat(10)]
    stats = make_station(make_config(tmp_path), factory, source=ScriptedSource(steps)).run()
    assert_accounted(stats)
    assert stats["counters"]["bad_frames"] == 1 and stats["counters"]["persisted"] == 2


def _png(path: Path, value: int) -> None:
    cv2.imwrite(str(path), np.full((32, 32, 3), value, np.uint8))


def _folder_config(tmp_path: Path, watch: Path, **camera: Any):
    cam = {"type": "folder", "path": str(watch), "settle_s": 0.0, "poll_s": 0.02, **camera}
    cam.update(FAST_RECONNECT)
    return make_config(tmp_path, camera=cam)


def test_folder_corrupt_and_truncated_files(tmp_path: Path, db) -> None:
    _, factory = db
    watch = tmp_path / "share"
    watch.mkdir()
    _png(watch / "a.png", 10)
    _ok, jpeg = cv2.imencode(".jpg", np.full((32, 32, 3), 200, np.uint8))
    (watch / "b.jpg").write_bytes(jpeg.tobytes()[: len(jpeg) // 2])  # truncated mid-write
    (watch / "c.png").write_bytes(b"not an image at all")  # corrupt
    _png(watch / "d.png", 240)
    (watch / "e.png.part").write_bytes(b"...")  # still being copied: ignored
    moved = tmp_path / "done"
    cfg = _folder_config(tmp_path, watch, move_to=str(moved))
    station = make_station(cfg, factory)
    station.start(max_frames=4)
    _wait(lambda: station.capture_finished)
    stats = station.stop()
    assert_accounted(stats)
    c = stats["counters"]
    assert c["captured"] == 4 and c["bad_frames"] == 2 and c["persisted"] == 2
    assert sorted(p.name for p in moved.iterdir() if p.is_file()) == ["a.png", "d.png"]
    assert sorted(p.name for p in (moved / "rejected").iterdir()) == ["b.jpg", "c.png"]
    assert [p.name for p in watch.iterdir()] == ["e.png.part"]


def test_folder_processes_new_files_once_in_order(tmp_path: Path, db) -> None:
    from sqlalchemy import select

    from inspection.db.models import Inspection

    _, factory = db
    watch = tmp_path / "share"
    watch.mkdir()
    state = tmp_path / "state.txt"
    cfg = _folder_config(tmp_path, watch, state_file=str(state))
    station = make_station(cfg, factory)
    station.start(max_frames=3)
    for i, name in enumerate(["z.png", "y.png", "x.png"]):  # written in this order
        _png(watch / name, 20 + i)
        ns = 1_000_000_000 * (i + 1)
        import os

        os.utime(watch / name, ns=(ns, ns))
        time.sleep(0.05)
    _wait(lambda: station.capture_finished)
    stats = station.stop()
    assert_accounted(stats)
    with factory() as s:
        refs = [r.frame_ref for r in s.scalars(select(Inspection).order_by(Inspection.id))]
    assert refs == ["z.png", "y.png", "x.png"]
    assert state.read_text().split() == refs
    # A restarted station remembers them: nothing is processed twice.
    again = make_station(cfg, factory)
    again.start(max_frames=1)
    _png(watch / "w.png", 50)
    _wait(lambda: again.capture_finished)
    assert_accounted(again.stop())
    assert count_rows(factory) == 4


def test_folder_unmounted_and_back(tmp_path: Path, db) -> None:
    _, factory = db
    watch = tmp_path / "share"
    watch.mkdir()
    _png(watch / "a.png", 10)
    station = make_station(_folder_config(tmp_path, watch), factory)
    station.start(max_frames=2)
    _wait(lambda: station.counters.get("persisted") == 1)
    shutil.rmtree(watch)  # the share goes away
    _wait(lambda: station.counters.get("reconnect_attempts") >= 2)
    watch.mkdir()
    _png(watch / "b.png", 20)
    _wait(lambda: station.capture_finished)
    stats = station.stop()
    assert_accounted(stats)
    assert stats["counters"]["reconnects"] == 1 and stats["counters"]["persisted"] == 2


class FlakyFactory:
    """A session factory that raises OperationalError while ``down``, or is slow."""

    def __init__(self, inner: sessionmaker[Session], delay_s: float = 0.0) -> None:
        self.inner = inner
        self.down = False
        self.delay_s = delay_s
        self.refused = 0

    def __call__(self) -> Session:
        if self.down:
            self.refused += 1
            raise OperationalError("BEGIN", {}, ConnectionError("server closed the connection"))
        if self.delay_s:
            time.sleep(self.delay_s)
        return self.inner()


def test_database_briefly_unavailable(tmp_path: Path, db) -> None:
    _, factory = db
    flaky = FlakyFactory(factory)
    gate = threading.Semaphore(0)
    source = ScriptedSource([flat(10)] * 10, gate=gate)
    station = make_station(make_config(tmp_path), factory, source=source, sink=DatabaseSink(flaky))  # type: ignore[arg-type]
    station.start()
    gate.release(2)
    _wait(lambda: station.counters.get("persisted") == 2)
    flaky.down = True
    gate.release(8)
    _wait(lambda: station.counters.get("persist_retries") >= 2)
    flaky.down = False
    _wait(lambda: station.capture_finished)
    stats = station.stop()
    assert_accounted(stats)
    c = stats["counters"]
    assert c["persisted"] == 10 and c["persist_failures"] == 0 and c["persist_retries"] >= 2
    assert count_rows(factory) == 10


def test_database_stays_down_failures_are_counted(tmp_path: Path, db) -> None:
    _, factory = db
    flaky = FlakyFactory(factory)
    flaky.down = True
    failed: list[str] = []
    cfg = make_config(tmp_path, pipeline={"persist_retry_s": 0.1, "persist_batch": 4})
    station = make_station(
        cfg,
        factory,
        source=ScriptedSource([flat(10)] * 6),
        sink=DatabaseSink(flaky),  # type: ignore[arg-type]
    )
    station.start()
    assert station._persist is not None
    station._persist.on_failure = lambda rows, exc: failed.extend(r.idempotency_key for r in rows)
    _wait(lambda: station.capture_finished)
    stats = station.stop()
    assert_accounted(stats)
    c = stats["counters"]
    assert c["scored"] == 6 and c["persist_failures"] == 6 and c["persisted"] == 0
    assert len(failed) == 6 and count_rows(factory) == 0


def test_slow_database_backpressure_drops_at_the_camera(tmp_path: Path, db) -> None:
    _, factory = db
    slow = FlakyFactory(factory, delay_s=0.03)
    cfg = make_config(
        tmp_path,
        camera={"count": 40, "fps": 500, "overflow": "drop"},
        pipeline={"queue_size": 2, "persist_queue_size": 2, "persist_batch": 1},
    )
    station = make_station(cfg, factory, sink=DatabaseSink(slow), model_loader=FakeLoader())  # type: ignore[arg-type]
    stats = station.run()
    assert_accounted(stats)
    c = stats["counters"]
    assert c["dropped"] > 0 and c["persist_failures"] == 0
    assert count_rows(factory) == c["persisted"] == c["scored"]


def _wait(cond, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)
