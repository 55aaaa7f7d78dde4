"""The command line's progress bar: one rich line per stage, fed by the ``progress(stage, done,
total)`` callbacks that training, benchmarks and retraining report through."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


@contextmanager
def stage_progress(console: Console | None = None) -> Iterator[Callable[[str, int, int], None]]:
    """A transient progress bar (gone when the block ends) and the callback that feeds it: a
    new line the first time a stage is reported, its bar moved on after; ``total`` 0 means
    unknown (an indeterminate bar)."""
    from rich.progress import Progress, TaskID

    with Progress(console=console, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total or None)
            bar.update(tasks[stage], completed=done, total=total or None)

        yield progress
