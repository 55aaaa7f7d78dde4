"""The station's capture thread: camera -> frame queue (see :mod:`.pipeline`)."""

from __future__ import annotations

import logging
import queue
import time

from inspection.errors import CameraError, FrameError
from inspection.station.sources import END, Frame, FrameSource
from inspection.worker import (
    Backoff,
    Counters,
    RateLimitedLog,
    Worker,
    put_or_drop,
    put_until_stopped,
)

logger = logging.getLogger(__name__)


class CaptureWorker(Worker):
    """Reads the camera into the frame queue; drops (counted) or waits when it is full."""

    def __init__(
        self,
        name: str,
        source: FrameSource,
        frames: queue.Queue[Frame],
        counters: Counters,
        backoff: Backoff,
        max_frames: int | None = None,
    ) -> None:
        super().__init__(name)
        self.source = source
        self.frames = frames
        self.counters = counters
        self.backoff = backoff
        self.max_frames = max_frames
        self._open = False
        self._lost = False
        self._seq = 0
        self._warn_drop = RateLimitedLog(logger)
        self._warn_bad = RateLimitedLog(logger)
        #: ``time.perf_counter()`` of the first frame read (None: none yet)
        self.first_frame_at: float | None = None

    def _connect(self) -> bool:
        try:
            self.source.open()
        except (CameraError, OSError) as exc:
            self.counters.inc("reconnect_attempts")
            delay = self.backoff.next_delay()
            logger.warning(
                "%s: camera %s unavailable (%s); retrying in %.1f s",
                self.name,
                self.source.describe(),
                exc,
                delay,
            )
            self.sleep(delay)
            return False
        if self._lost:
            self.counters.inc("reconnects")
            logger.info("%s: camera %s reconnected", self.name, self.source.describe())
        self._open, self._lost = True, False
        self.backoff.reset()
        return True

    def step(self) -> bool:
        if self.max_frames is not None and self._seq >= self.max_frames:
            return False
        if not self._open and not self._connect():
            return True
        try:
            result = self.source.read()
        except CameraError as exc:
            logger.warning("%s: camera lost: %s", self.name, exc)
            self.source.close()
            self._open, self._lost = False, True
            self.counters.inc("reconnect_attempts")
            self.sleep(self.backoff.next_delay())
            return True
        except FrameError as exc:
            self._seq += 1
            self.counters.inc("captured")
            self.counters.inc("bad_frames")
            self._warn_bad.warning("%s: bad frame skipped: %s", self.name, exc)
            return True
        if result is END:
            logger.info("%s: camera %s has no more frames", self.name, self.source.describe())
            return False
        if result is None:
            return True
        assert isinstance(result, Frame)
        if self.first_frame_at is None:
            self.first_frame_at = time.perf_counter()
        result.seq = self._seq
        self._seq += 1
        self.counters.inc("captured")
        if self.source.overflow == "wait":
            if not put_until_stopped(self.frames, result, self.stop_event):
                self.counters.inc("dropped")  # stopped while waiting for room
        elif not put_or_drop(self.frames, result):
            self.counters.inc("dropped")
            self._warn_drop.warning("%s: scoring is behind the camera, dropping frames", self.name)
        return True

    def teardown(self) -> None:
        self.source.close()
