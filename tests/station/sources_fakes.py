"""Scriptable camera sources for fault tests."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from inspection.errors import CameraError, FrameError
from inspection.station.sources import END, Frame, FrameSource, ReadResult, _stamp

#: A script step: an image, or an exception to raise from ``read``.
Step = np.ndarray | CameraError | FrameError


def flat(value: int, size: int = 32) -> np.ndarray:
    """A uniform (size, size, 3) uint8 frame: brightness ``value`` (FakeModel's score)."""
    return np.full((size, size, 3), value, np.uint8)


class ScriptedSource(FrameSource):
    """Plays ``steps`` in order, then :data:`END`.

    ``fail_opens``: how many ``open`` calls fail after each lost camera (the camera "vanishes"
    and "returns" after that many reconnect attempts). ``gate``: when given, each read waits for
    it (lets tests pace the camera).
    """

    def __init__(
        self,
        steps: Sequence[Step],
        fail_opens: int = 0,
        overflow: str = "wait",
        gate: threading.Semaphore | None = None,
    ) -> None:
        self.steps = list(steps)
        self.fail_opens = fail_opens
        self.overflow = overflow  # type: ignore[assignment]
        self.gate = gate
        self._i = 0
        self._failing = 0
        self.opens = 0

    def describe(self) -> str:
        return "scripted"

    def open(self) -> None:
        self.opens += 1
        if self._failing > 0:
            self._failing -= 1
            raise CameraError("scripted camera is gone")

    def read(self) -> ReadResult:
        if self._i >= len(self.steps):
            return END
        if self.gate is not None and not self.gate.acquire(timeout=0.05):
            return None
        step = self.steps[self._i]
        self._i += 1
        if isinstance(step, CameraError):
            self._failing = self.fail_opens
            raise step
        if isinstance(step, FrameError):
            raise step
        return _stamp(Frame(step, f"scripted#{self._i}"))


def constant_classifier(path: object, known_accept_rate: float | None = None) -> object:
    """A classifier loader for config tests: every region gets the bundle folder's name, with
    the station's operating point appended when one is set (``dent@0.8``)."""
    from pathlib import Path

    label = Path(str(path)).name
    if known_accept_rate is not None:
        label = f"{label}@{known_accept_rate}"
    return lambda crop, amap: (label, 0.8, False)
