"""Shared lifecycle for long-running work: setup -> loop until stopped -> teardown.

A :class:`Worker` runs in its own thread. Subclasses implement :meth:`Worker.step` (one short
unit of work that returns regularly, e.g. after waiting at most a fraction of a second on a
queue) and optionally :meth:`Worker.setup` / :meth:`Worker.teardown`. ``stop()`` sets a
:class:`threading.Event` that ``step`` implementations use for their waits, so a stop request
is answered within one step. The station pipeline stages, and later the retraining scheduler and
the spool replayer, are workers.

:class:`Counters` is a thread-safe bag of named integer counters; the bounded-queue helpers make
"drop and count" and "wait but stay stoppable" explicit, so nothing is lost silently.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long blocking queue operations wait before re-checking the stop event, seconds.
POLL_S = 0.1


class Counters:
    """Named, monotonically increasing integer counters, safe to update from many threads.

    Args:
        names: counters that exist (at zero) from the start, so snapshots always list them.
    """

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, int] = dict.fromkeys(names, 0)

    def inc(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` (created at zero when new)."""
        with self._lock:
            self._values[name] = self._values.get(name, 0) + n

    def get(self, name: str) -> int:
        """Current value of ``name`` (0 when it was never incremented)."""
        with self._lock:
            return self._values.get(name, 0)

    def snapshot(self) -> dict[str, int]:
        """A consistent copy of every counter."""
        with self._lock:
            return dict(self._values)

    def __repr__(self) -> str:
        return f"Counters({self.snapshot()})"


def put_or_drop(q: queue.Queue[T], item: T) -> bool:
    """Put ``item`` without waiting; False (the caller counts the drop) when ``q`` is full."""
    try:
        q.put_nowait(item)
    except queue.Full:
        return False
    return True


def put_until_stopped(
    q: queue.Queue[T], item: T, stop: threading.Event, poll_s: float = POLL_S
) -> bool:
    """Put ``item``, waiting while ``q`` is full (backpressure); False if ``stop`` is set first."""
    try:
        q.put_nowait(item)  # the usual case, without the timed wait's bookkeeping
        return True
    except queue.Full:
        pass
    while True:
        try:
            q.put(item, timeout=poll_s)
            return True
        except queue.Full:
            if stop.is_set():
                return False


def get_or_none(q: queue.Queue[T], timeout_s: float = POLL_S) -> T | None:
    """The next item of ``q``, or None after ``timeout_s`` seconds without one."""
    try:
        return q.get(timeout=timeout_s)
    except queue.Empty:
        return None


def get_or_none_now(q: queue.Queue[T]) -> T | None:
    """The next item of ``q`` if one is waiting, else None (never blocks)."""
    try:
        return q.get_nowait()
    except queue.Empty:
        return None


def drain(q: queue.Queue[T], limit: int) -> list[T]:
    """Up to ``limit`` items already waiting in ``q``, without blocking."""
    items: list[T] = []
    while len(items) < limit:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            break
    return items


class Worker:
    """A thread with a setup -> loop -> teardown lifecycle and a cooperative stop event.

    ``run`` calls :meth:`setup`, then :meth:`step` until :attr:`stop_event` is set or ``step``
    returns False (finished on its own, e.g. a finite source is exhausted), then
    :meth:`teardown` (always, also after an error). An exception escaping ``step`` ends the
    worker: it is logged, kept in :attr:`error`, and :attr:`finished` is set; stages that must
    survive bad input catch and count their errors inside ``step`` instead.

    Args:
        name: thread name, also used in log messages.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.stop_event = threading.Event()
        self.finished = threading.Event()
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    # -- subclass hooks --------------------------------------------------------------------
    def setup(self) -> None:
        """Acquire resources before the loop (runs in the worker thread)."""

    def step(self) -> bool:
        """One unit of work; return False when the worker is done. Must return regularly."""
        raise NotImplementedError

    def teardown(self) -> None:
        """Release resources after the loop (runs in the worker thread, also after errors)."""

    # -- lifecycle -------------------------------------------------------------------------
    def run(self) -> None:
        """The thread body; call directly to run the worker in the current thread."""
        try:
            self.setup()
            while not self.stop_event.is_set():
                if not self.step():
                    break
        except Exception as exc:
            self.error = exc
            logger.exception("worker %s failed", self.name)
        finally:
            try:
                self.teardown()
            except Exception:
                logger.exception("worker %s: teardown failed", self.name)
            self.finished.set()

    def start(self) -> None:
        """Start the worker thread (daemon, so a crashed main thread cannot hang on it)."""
        if self._thread is not None:
            raise RuntimeError(f"worker {self.name} was already started")
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the worker to stop after its current step (does not wait)."""
        self.stop_event.set()

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait for the thread to end; True when it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        """Whether the worker thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` or until stopped; True when the wait ended because of a stop."""
        return self.stop_event.wait(seconds)


class Backoff:
    """Exponential backoff delays: ``initial_s``, doubling, capped at ``max_s``; ``reset`` on success."""

    def __init__(self, initial_s: float = 0.5, max_s: float = 30.0, factor: float = 2.0) -> None:
        if initial_s <= 0 or max_s < initial_s or factor < 1:
            raise ValueError("backoff needs 0 < initial_s <= max_s and factor >= 1")
        self.initial_s = initial_s
        self.max_s = max_s
        self.factor = factor
        self._next = initial_s

    def next_delay(self) -> float:
        """The delay to wait now (seconds); the following one is ``factor`` times longer."""
        delay = self._next
        self._next = min(self.max_s, self._next * self.factor)
        return delay

    def reset(self) -> None:
        """Start again from ``initial_s`` (after a success)."""
        self._next = self.initial_s


class RateLimitedLog:
    """Log a repeated warning at most once per ``interval_s``, with how many were suppressed."""

    def __init__(self, log: logging.Logger, interval_s: float = 5.0) -> None:
        self._log = log
        self._interval_s = interval_s
        self._last = -float("inf")
        self._suppressed = 0
        self._lock = threading.Lock()

    def warning(self, msg: str, *args: object) -> None:
        """Log ``msg % args`` now, or count it as suppressed when one was logged recently."""
        with self._lock:
            now = time.monotonic()
            if now - self._last < self._interval_s:
                self._suppressed += 1
                return
            suppressed, self._suppressed, self._last = self._suppressed, 0, now
        if suppressed:
            msg = f"{msg} ({suppressed} similar messages suppressed)"
        self._log.warning(msg, *args)


def stop_all(workers: Iterable[Worker], timeout_s: float = 10.0) -> Mapping[str, bool]:
    """Stop every worker, then wait for each (sharing ``timeout_s``); name -> ended in time."""
    items = list(workers)
    for w in items:
        w.stop()
    deadline = time.monotonic() + timeout_s
    return {w.name: w.join(max(0.0, deadline - time.monotonic())) for w in items}
