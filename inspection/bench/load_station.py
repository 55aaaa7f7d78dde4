"""The simulated station of ``inspection bench load`` (:mod:`inspection.bench.load_bench`): the
child process each station runs (``python -m inspection.bench.load_station <spec.json>``): the
real :class:`~inspection.station.pipeline.Station` with a fake fast scorer, a durable camera
that resumes at its checkpoint, and a sink wrapper that times each batch's write.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from inspection.station.sources import END, Frame, FrameSource, ReadResult, _stamp

logger = logging.getLogger(__name__)

#: Side of the fake model's input in pixels.
MODEL_SIZE = 32


class FakeScorer:
    """A fast stand-in model: the anomaly map is the frame's brightness (0..1)."""

    size = MODEL_SIZE
    image_threshold = 0.5
    pixel_threshold = 0.5

    def predict(self, images: np.ndarray) -> Any:
        from inspection.runtime import Prediction

        amap = images.astype(np.float32).mean(axis=3) / 255.0
        raw = amap.reshape(len(images), -1).max(axis=1).astype(np.float32)
        score = np.clip(raw, 0.0, 1.0).astype(np.float32)
        return Prediction(raw, score, amap, raw > self.image_threshold)


def _frames(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A good part (dim texture) and a defective one (the same with a bright scratch)."""
    rng = np.random.default_rng(0)
    good = rng.integers(20, 90, (size, size, 3), dtype=np.uint8)
    bad = good.copy()
    bad[size // 3 : size // 3 + max(2, size // 16), size // 4 : size * 3 // 4] = 250
    return good, bad


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class DurableCamera(FrameSource):
    """Frames due at ``t0 + n / fps`` for ``n < total``; resumes at its fsync'd checkpoint.

    The checkpoint is the oldest frame not yet acknowledged (:meth:`ack`, called when a
    result is durable), so a restarted station re-delivers every frame it had not made durable.
    """

    overflow: Literal["drop", "wait"] = "wait"

    def __init__(
        self,
        station: str,
        *,
        t0: float,
        fps: float,
        total: int,
        checkpoint: Path,
        size: int,
        defect_every: int,
    ) -> None:
        self.station = station
        self.t0 = t0
        self.fps = fps
        self.total = total
        self.checkpoint = checkpoint
        self.defect_every = defect_every
        self.good, self.bad = _frames(size)
        self._lock = threading.Lock()
        self._pending: set[int] = set()
        self._last_save = 0.0
        self.resumed_at = 0
        if checkpoint.exists():
            self.resumed_at = int(json.loads(checkpoint.read_text())["next"])
        self.next = self.resumed_at
        self.high = self.resumed_at  # highest frame delivered + 1 by this process

    def describe(self) -> str:
        return f"sim:{self.station}"

    def open(self) -> None:
        """Nothing to connect (the camera is simulated)."""

    def close(self) -> None:
        """Save the checkpoint."""
        self._save(force=True)

    def read(self) -> ReadResult:
        n = self.next
        if n >= self.total:
            return END
        wait = self.t0 + n / self.fps - time.time()
        if wait > 0:
            time.sleep(min(wait, 0.1))
            if wait > 0.1:
                return None
        with self._lock:
            self._pending.add(n)
            self.next = n + 1
            self.high = max(self.high, n + 1)
        defect = zlib.crc32(f"{self.station}:{n}".encode()) % self.defect_every == 0
        image = self.bad if defect else self.good
        return _stamp(Frame(image, f"sim:{self.station}:{n}", key=f"{self.station}-{n:07d}"))

    def ack(self, keys: Sequence[str]) -> None:
        """These results are durable: move the checkpoint past them."""
        with self._lock:
            for key in keys:
                self._pending.discard(int(key.rsplit("-", 1)[1]))
        self._save()

    def _save(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_save < 0.2:
            return
        with self._lock:
            position = min(self._pending) if self._pending else self.next
            self._last_save = now
        _write_atomic(self.checkpoint, json.dumps({"next": position}))


class TimedSink:
    """Wraps the station's sink: times each write (per result) and acknowledges the camera."""

    def __init__(self, inner: Any, camera: DurableCamera) -> None:
        self.inner = inner
        self.camera = camera
        self.write_ms: list[float] = []
        self._lock = threading.Lock()

    def write(self, items: Sequence[Any]) -> None:
        t0 = time.perf_counter()
        self.inner.write(items)
        ms = (time.perf_counter() - t0) * 1000
        with self._lock:
            self.write_ms.extend([ms] * len(items))
        self.camera.ack([i.idempotency_key for i in items])

    def start(self) -> None:
        start = getattr(self.inner, "start", None)
        if callable(start):
            start()

    def stop(self, timeout_s: float = 10.0) -> Any:
        stop = getattr(self.inner, "stop", None)
        return stop(timeout_s) if callable(stop) else None


def station_main(spec_path: str) -> None:
    """Child process: run one simulated station until its camera has delivered every frame."""
    from sqlalchemy.exc import DBAPIError

    from inspection.db.engine import make_engine, make_session_factory
    from inspection.errors import DatabaseError
    from inspection.station.config import parse_station_config
    from inspection.station.pipeline import Station
    from inspection.storage import LocalArtifactStore

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    spec = json.loads(Path(spec_path).read_text())
    config = parse_station_config(spec["config"])
    camera = DurableCamera(
        config.id,
        t0=spec["t0"],
        fps=spec["fps"],
        total=spec["total"],
        checkpoint=Path(spec["checkpoint"]),
        size=spec["frame_size"],
        defect_every=spec["defect_every"],
    )
    engine = make_engine(os.environ["INSPECTION_DATABASE_URL"], pool_size=4)
    station = Station(
        config,
        session_factory=make_session_factory(engine),
        store=LocalArtifactStore(config.artifacts_dir),
        source=camera,
        model_loader=lambda bundle, settings, batch: FakeScorer(),
    )
    timed = TimedSink(station.sink, camera)
    station.sink = timed
    while True:  # a station restarted during an outage waits for the database to register
        try:
            station.start()
            break
        except (DatabaseError, DBAPIError) as exc:
            logger.warning("database not reachable yet, retrying start: %s", exc)
            time.sleep(1.0)
    logger.info("station %s resumed at frame %d", config.id, camera.resumed_at)
    while not station.capture_finished:
        time.sleep(0.2)
    stats = station.stop()
    engine.dispose()
    report = {
        "station": config.id,
        "resumed_at": camera.resumed_at,
        "produced": camera.high,
        "counters": stats["counters"],
        "latency_ms": stats["latency_ms"],
        "write_ms": timed.write_ms,
        "spool_left": _spool_left(station),
    }
    _write_atomic(Path(spec["report"]), json.dumps(report))


def _spool_left(station: Any) -> int:
    from inspection.station.spool import SpoolingSink

    sink = getattr(station.sink, "inner", station.sink)
    return sink.spool.stats().items if isinstance(sink, SpoolingSink) else 0


if __name__ == "__main__":
    station_main(sys.argv[1])
