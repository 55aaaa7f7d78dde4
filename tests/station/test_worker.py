"""The shared worker lifecycle, counters, queue helpers and backoff."""

from __future__ import annotations

import queue
import threading

import pytest

from inspection.worker import (
    Backoff,
    Counters,
    Worker,
    drain,
    get_or_none,
    put_or_drop,
    put_until_stopped,
    stop_all,
)


class CountTo(Worker):
    def __init__(self, n: int, fail_at: int | None = None) -> None:
        super().__init__("count")
        self.n = n
        self.fail_at = fail_at
        self.seen: list[int] = []
        self.events: list[str] = []

    def setup(self) -> None:
        self.events.append("setup")

    def step(self) -> bool:
        i = len(self.seen)
        if i == self.fail_at:
            raise RuntimeError("boom")
        self.seen.append(i)
        return len(self.seen) < self.n

    def teardown(self) -> None:
        self.events.append("teardown")


def test_lifecycle_runs_to_completion() -> None:
    w = CountTo(5)
    w.start()
    assert w.join(10)
    assert w.seen == [0, 1, 2, 3, 4] and w.events == ["setup", "teardown"]
    assert w.finished.is_set() and w.error is None
    with pytest.raises(RuntimeError):
        w.start()


def test_errors_end_the_worker_after_teardown() -> None:
    w = CountTo(10, fail_at=2)
    w.run()
    assert isinstance(w.error, RuntimeError) and w.events == ["setup", "teardown"]


def test_stop_event_is_honoured() -> None:
    class Idle(Worker):
        def step(self) -> bool:
            self.sleep(10)
            return True

    w = Idle("idle")
    w.start()
    assert stop_all([w], timeout_s=5) == {"idle": True}


def test_counters_are_thread_safe() -> None:
    c = Counters(["a"])
    threads = [threading.Thread(target=lambda: [c.inc("b") for _ in range(1000)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.snapshot() == {"a": 0, "b": 4000} and c.get("zzz") == 0


def test_queue_helpers() -> None:
    q: queue.Queue[int] = queue.Queue(maxsize=2)
    assert put_or_drop(q, 1) and put_or_drop(q, 2) and not put_or_drop(q, 3)
    stop = threading.Event()
    stop.set()
    assert not put_until_stopped(q, 4, stop, poll_s=0.01)
    assert drain(q, 10) == [1, 2] and get_or_none(q, 0.01) is None


def test_backoff_doubles_and_caps() -> None:
    b = Backoff(0.5, 3.0)
    assert [b.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next_delay() == 0.5
    with pytest.raises(ValueError):
        Backoff(0, 1)
