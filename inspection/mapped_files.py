"""Resident pages of files this process has mapped: measured, and handed back after a compile.

OpenVINO maps a model's weights file (``model.bin``, or the compile cache's blob) and its CPU
plugin repacks each large constant into its own layout when it compiles for a fixed shape.
From then on it reads the repacked copy; the mapped file's pages are no longer used, yet stay
resident and count in the process's memory (PaDiM at 256 px: 230 MiB, next to the 236 MiB
copy). :func:`release_mapped_pages` asks the kernel to reclaim them (``madvise`` with
``MADV_PAGEOUT``). Only read-only mappings are named: their pages are the file's own content,
so a later read of any of them faults it back in from the file (slower, never wrong). The
advice never destroys data, which matters because the address list is read first and advised
after: a range another thread unmaps and reuses for other memory in between is at worst paged
out. (``MADV_DONTNEED`` would zero such memory. It was tried first, and one OC-GAN station
process in a bench run aborted with a corrupted heap, most likely from exactly that race.)

While it compiles, the plugin reads each source page once; :func:`releasing_mapped_pages` hands
them back every few milliseconds meanwhile, so the file and the repacked copy are never both
resident (PaDiM at 256 px: peak ~360 against ~600 MiB in a bare process).

Linux only (``/proc/self/maps``); elsewhere these measure and release nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: ``madvise`` advice (Linux 5.4+): reclaim the pages now; file pages are re-read when touched
#: again, anonymous ones swapped out (or kept, without swap). Never destroys data.
MADV_PAGEOUT = 21

_RANGE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$")


@functools.cache
def can_page_out() -> bool:
    """Whether this system takes ``MADV_PAGEOUT`` (Linux 5.4 or later)."""
    if not sys.platform.startswith("linux"):
        return False
    major, minor = [*os.uname().release.split("."), "0"][:2]
    try:
        return (int(major), int("".join(c for c in minor if c.isdigit()) or 0)) >= (5, 4)
    except ValueError:
        return False


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r + "/") for r in roots)


def _roots(dirs: Iterable[str | Path]) -> tuple[str, ...]:
    return tuple(str(Path(d).resolve()) for d in dirs)


def _read_only_ranges(roots: tuple[str, ...]) -> Iterator[tuple[int, int]]:
    """(start, end) addresses of this process's read-only mappings of files under ``roots``."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return
    for line in lines:
        m = _RANGE.match(line)
        if m and "w" not in m.group(3) and _under(m.group(4).strip(), roots):
            yield int(m.group(1), 16), int(m.group(2), 16)


def mapped_mib(dirs: Iterable[str | Path]) -> float:
    """Resident MiB of this process's mappings of files under ``dirs`` (0 where unknown)."""
    roots = _roots(dirs)
    total_kib = 0
    current = False
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return 0.0
    for line in lines:
        m = _RANGE.match(line)
        if m:
            current = _under(m.group(4).strip(), roots)
        elif current and line.startswith("Rss:"):
            total_kib += int(line.split()[1])
    return total_kib / 1024


@functools.cache
def _madvise() -> Any:
    """libc's ``madvise`` (looked up once: ``find_library`` runs ``ldconfig``), or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError) as exc:
        logger.debug("no madvise here (%s): mapped pages kept", exc)
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


def release_mapped_pages(dirs: Iterable[str | Path]) -> int:
    """Ask the kernel to reclaim the resident pages of read-only mappings of files under
    ``dirs``; how many mappings were advised (0 off Linux, or where ``madvise`` or its
    ``MADV_PAGEOUT`` advice is unavailable)."""
    madvise = _madvise() if can_page_out() else None
    if madvise is None:
        return 0
    done = 0
    for start, end in _read_only_ranges(_roots(dirs)):
        if madvise(start, end - start, MADV_PAGEOUT) == 0:
            done += 1
        else:
            logger.debug("madvise failed on %x-%x (errno %d)", start, end, ctypes.get_errno())
    return done


#: Seconds between two hand-backs while :func:`releasing_mapped_pages` runs.
RELEASE_INTERVAL_S = 0.02


@contextlib.contextmanager
def releasing_mapped_pages(
    dirs: Iterable[str | Path], interval_s: float = RELEASE_INTERVAL_S
) -> Iterator[None]:
    """Hand back the pages of read-only mappings of files under ``dirs`` every ``interval_s``
    while the block runs, and once more at its end (:func:`release_mapped_pages`)."""
    roots = list(dirs)
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            release_mapped_pages(roots)

    worker = threading.Thread(target=loop, name="release-mapped-pages", daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join()
        release_mapped_pages(roots)
