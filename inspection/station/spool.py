"""A station's local spool: results wait on disk while the central database is unreachable.

:class:`Spool` is an append-only on-disk queue in one folder per station, one file per spooled
batch of result rows (``<seq>.<rows>.rec``), replayed oldest first. Writing a batch is crash
safe: the bytes go to ``<seq>.tmp``, are fsync'd, the file is renamed to its final name and the
folder is fsync'd; only then does :meth:`Spool.append` return. A process killed (SIGKILL, power
loss) in the middle leaves at most one ``.tmp`` file, which the next :meth:`Spool.open` discards
(counted as ``spool_discarded``): that batch was never acknowledged, so nothing that was
acknowledged is lost. Every record carries its length and SHA-256; a record that fails the check
(a disk that lied about fsync) is moved to ``corrupt/`` and counted, never replayed half. The
record format and the spool's errors: :mod:`.spool_format`.

Replay (:class:`SpoolReplayer`, a :class:`~inspection.worker.Worker`) writes the oldest records
to the database in one transaction through :func:`inspection.db.repo.insert_inspections`, which
is idempotent on ``(station, idempotency_key)``, and only then deletes their files. A crash
between the commit and the delete replays those rows again, which stores nothing twice. A record
the database refuses for good (not a transient error) is moved to ``rejected/`` and logged with
its keys, so one bad row never blocks the queue.

:class:`SpoolingSink` puts the spool in front of the database sink: a batch goes straight to
the database while the spool is empty and the database answers; when the database is
unavailable, or older results are still waiting in the spool, it is appended to the spool
instead (keeping the order). Configuration comes from the environment (see
:func:`sink_from_environment`): ``INSPECTION_SPOOL_DIR`` (spool root; each station uses
``<root>/<station id>``) and ``INSPECTION_SPOOL_MAX_MB`` (default 2048).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from inspection.db import repo
from inspection.station.persist import ResultSink, _transient
from inspection.station.spool_format import (
    CorruptRecordError,
    SpoolError,
    SpoolFullError,
    SpoolLockedError,
    decode_record,
    encode_record,
    item_from_json,
    item_to_json,
)
from inspection.worker import Backoff, Counters, RateLimitedLog, Worker

logger = logging.getLogger(__name__)

_RECORD_NAME = re.compile(r"^(\d{16})\.(\d+)\.rec$")
ENV_DIR = "INSPECTION_SPOOL_DIR"
ENV_MAX_MB = "INSPECTION_SPOOL_MAX_MB"
DEFAULT_MAX_BYTES = 2048 * 1024 * 1024

#: Counters a spooling station adds to its own (see :class:`SpoolingSink`).
SPOOL_COUNTERS = (
    "spooled",
    "replayed",
    "spool_discarded",
    "spool_corrupt",
    "replay_rejected",
    "replay_retries",
)


# -- the spool ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpoolRecord:
    """One spooled batch: its sequence number, file and rows (oldest record first)."""

    seq: int
    path: Path
    items: list[repo.InspectionData]


@dataclass(frozen=True)
class SpoolStats:
    """What is waiting: records (files), result rows and bytes on disk."""

    records: int
    items: int
    bytes: int


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """An append-only, fsync'd, file-per-record queue in ``directory`` (see the module doc).

    Args:
        directory: the station's spool folder (created when missing).
        max_bytes: size limit; :meth:`append` raises :class:`SpoolFullError` beyond it.
        fsync: fsync records and the folder (turn off only in tests of other things).
        counters: where ``spool_discarded`` / ``spool_corrupt`` are counted.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        fsync: bool = True,
        counters: Counters | None = None,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.counters = counters if counters is not None else Counters(SPOOL_COUNTERS)
        self._lock = threading.Lock()
        self._index: dict[int, tuple[Path, int, int]] = {}  # seq -> path, rows, bytes
        self._next_seq = 0
        self._bytes = 0
        self._items = 0
        self._lock_fd: int | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def open(self) -> SpoolStats:
        """Lock the folder, discard half-written records, index the complete ones.

        Raises:
            SpoolLockedError: another process holds the folder.
            SpoolError: the folder cannot be created or read.
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SpoolError(f"cannot open spool {self.directory}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise SpoolLockedError(
                f"spool {self.directory} is in use by another process (one spool per station)"
            ) from exc
        self._lock_fd = fd
        discarded = 0
        with self._lock:
            self._index.clear()
            for entry in os.scandir(self.directory):
                if entry.name.endswith(".tmp"):
                    # Never renamed into place: the append did not return, nothing acknowledged.
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                    discarded += 1
                    continue
                match = _RECORD_NAME.match(entry.name)
                if match is None:
                    continue
                seq, rows = int(match.group(1)), int(match.group(2))
                self._index[seq] = (Path(entry.path), rows, entry.stat().st_size)
            self._next_seq = max(self._index, default=-1) + 1
            self._bytes = sum(size for _, _, size in self._index.values())
            self._items = sum(rows for _, rows, _ in self._index.values())
        if discarded:
            self.counters.inc("spool_discarded", discarded)
            logger.warning(
                "spool %s: discarded %d half-written record(s) left by a crash (never "
                "acknowledged, so nothing acknowledged is lost)",
                self.directory,
                discarded,
            )
        stats = self.stats()
        if stats.records:
            logger.info(
                "spool %s: %d result(s) in %d record(s) waiting to be replayed",
                self.directory,
                stats.items,
                stats.records,
            )
        return stats

    def close(self) -> None:
        """Release the folder lock (records stay on disk)."""
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Spool:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- queue ---------------------------------------------------------------------------------
    def stats(self) -> SpoolStats:
        """Records, rows and bytes waiting."""
        with self._lock:
            return SpoolStats(len(self._index), self._items, self._bytes)

    def __len__(self) -> int:
        with self._lock:
            return len(self._index)

    def append(self, items: Sequence[repo.InspectionData]) -> int:
        """Write ``items`` as one durable record; return its sequence number.

        Returns only after the record is fsync'd under its final name.

        Raises:
            SpoolFullError: the spool would exceed ``max_bytes``.
            SpoolError: the record cannot be written (disk full, read-only, not open).
        """
        if self._lock_fd is None:
            raise SpoolError(f"spool {self.directory} is not open")
        if not items:
            raise ValueError("nothing to spool")
        data = encode_record(items)
        with self._lock:
            if self._bytes + len(data) > self.max_bytes:
                raise SpoolFullError(
                    f"spool {self.directory} is full ({self._bytes} bytes in "
                    f"{len(self._index)} records, limit {self.max_bytes})"
                )
            seq = self._next_seq
            self._next_seq += 1
        final = self.directory / f"{seq:016d}.{len(items)}.rec"
        tmp = self.directory / f"{seq:016d}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, final)
            if self.fsync:
                _fsync_dir(self.directory)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise SpoolError(f"cannot write to spool {self.directory}: {exc}") from exc
        with self._lock:
            self._index[seq] = (final, len(items), len(data))
            self._bytes += len(data)
            self._items += len(items)
        return seq

    def peek(self, max_items: int = 500) -> list[SpoolRecord]:
        """The oldest records, in order, holding up to ``max_items`` rows (at least one record).

        Records that fail their checksum are moved to ``corrupt/`` (counted, logged) and
        skipped.
        """
        with self._lock:
            seqs = sorted(self._index)
        out: list[SpoolRecord] = []
        total = 0
        for seq in seqs:
            with self._lock:
                entry = self._index.get(seq)
            if entry is None:
                continue
            path, rows, _ = entry
            if out and total + rows > max_items:
                break
            try:
                items = decode_record(path.read_bytes(), path.name)
            except FileNotFoundError:
                self._forget(seq)
                continue
            except CorruptRecordError as exc:
                self.counters.inc("spool_corrupt")
                logger.error("spool %s: %s; moved to corrupt/", self.directory, exc)
                self._set_aside([SpoolRecord(seq, path, [])], "corrupt")
                continue
            except OSError as exc:
                raise SpoolError(f"cannot read spool record {path}: {exc}") from exc
            out.append(SpoolRecord(seq, path, items))
            total += rows
        return out

    def remove(self, records: Sequence[SpoolRecord]) -> None:
        """Delete records that are stored in the database (after the commit)."""
        for record in records:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(record.path)
            self._forget(record.seq)

    def set_aside(self, record: SpoolRecord, folder: str = "rejected") -> Path:
        """Move a record the database refuses for good out of the queue; return its new path."""
        return self._set_aside([record], folder)[0]

    def _set_aside(self, records: Sequence[SpoolRecord], folder: str) -> list[Path]:
        target = self.directory / folder
        target.mkdir(exist_ok=True)
        moved = []
        for record in records:
            dest = target / record.path.name
            try:
                os.replace(record.path, dest)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise SpoolError(f"cannot move {record.path} to {target}: {exc}") from exc
            self._forget(record.seq)
            moved.append(dest)
        return moved

    def _forget(self, seq: int) -> None:
        with self._lock:
            entry = self._index.pop(seq, None)
            if entry is not None:
                self._bytes -= entry[2]
                self._items -= entry[1]


# -- replay ------------------------------------------------------------------------------------


class SpoolReplayer(Worker):
    """Writes spooled records to the database, oldest first, and deletes them after commit.

    Counters: ``replayed`` (rows stored or found already stored), ``replay_retries`` (database
    still unavailable), ``replay_rejected`` (records the database refused for good, moved to
    ``rejected/``). Set :attr:`drain_then_stop` to end once the spool is empty.
    """

    def __init__(
        self,
        name: str,
        spool: Spool,
        sink: ResultSink,
        counters: Counters,
        *,
        poll_s: float = 0.5,
        max_items: int = 500,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(name)
        self.spool = spool
        self.sink = sink
        self.counters = counters
        self.poll_s = poll_s
        self.max_items = max_items
        self.backoff = backoff or Backoff(0.5, 10.0)
        self.drain_then_stop = False
        #: set after the last replay attempt failed transiently (the database is still down)
        self.database_down = False
        self._warn = RateLimitedLog(logger, interval_s=30.0)

    def step(self) -> bool:
        records = self.spool.peek(self.max_items)
        if not records:
            self.database_down = False
            if self.drain_then_stop:
                return False
            self.sleep(self.poll_s)
            return True
        if self.drain_then_stop:
            # Shutting down: one more try, but do not wait out a database outage.
            return self._replay(records, wait=False) > 0
        self._replay(records)
        return True

    def replay_once(self) -> int:
        """Replay one batch now (tests, tools); the number of rows written."""
        records = self.spool.peek(self.max_items)
        return self._replay(records) if records else 0

    def _replay(self, records: list[SpoolRecord], *, wait: bool = True) -> int:
        items = [item for record in records for item in record.items]
        try:
            self.sink.write(items)
        except Exception as exc:
            if _transient(exc):
                self.database_down = True
                self.counters.inc("replay_retries")
                delay = self.backoff.next_delay()
                self._warn.warning(
                    "%s: database still unavailable, %d spooled result(s) wait; retrying in %.1f s",
                    self.name,
                    self.spool.stats().items,
                    delay,
                )
                if wait:
                    self.sleep(delay)
                return 0
            if len(records) > 1:
                return sum(self._replay([record], wait=wait) for record in records)
            record = records[0]
            dest = self.spool.set_aside(record)
            self.counters.inc("replay_rejected")
            keys = ", ".join(i.idempotency_key for i in record.items[:10])
            logger.error(
                "%s: the database refused spooled record %s for good (%s); moved to %s (keys %s)",
                self.name,
                record.path.name,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                dest,
                keys,
            )
            return 0
        self.spool.remove(records)
        self.database_down = False
        self.backoff.reset()
        self.counters.inc("replayed", len(items))
        logger.info(
            "%s: replayed %d spooled result(s) (%d record(s)); %d record(s) left",
            self.name,
            len(items),
            len(records),
            len(self.spool),
        )
        return len(items)


# -- the sink ----------------------------------------------------------------------------------


class SpoolingSink:
    """Database first; the spool while the database is unavailable or the spool has a backlog.

    ``start`` opens the spool and starts the replayer; ``stop`` gives the replayer up to
    ``timeout_s`` to empty the spool (what is left stays on disk for the next start).

    Counters (added to ``counters``): ``spooled`` (rows appended to the spool), and the
    replayer's (see :class:`SpoolReplayer`), ``spool_discarded``, ``spool_corrupt``.
    """

    def __init__(
        self,
        primary: ResultSink,
        spool: Spool,
        counters: Counters,
        *,
        name: str = "spool",
        replay_poll_s: float = 0.5,
    ) -> None:
        self.primary = primary
        self.spool = spool
        self.counters = counters
        for counter in SPOOL_COUNTERS:
            counters.inc(counter, 0)
        spool.counters = counters
        self.replayer = SpoolReplayer(
            f"{name}-replay", spool, primary, counters, poll_s=replay_poll_s
        )
        self._warn = RateLimitedLog(logger, interval_s=30.0)

    def start(self) -> None:
        """Open the spool (discarding half-written records) and start replaying it."""
        self.spool.open()
        self.replayer.start()

    def stop(self, timeout_s: float = 10.0) -> SpoolStats:
        """Replay what is left for up to ``timeout_s`` (stops at the first refusal); close."""
        if self.replayer.alive:
            self.replayer.drain_then_stop = True  # ends when empty or the database refuses
            self.replayer.join(timeout_s)
            self.replayer.stop()
            self.replayer.join(10.0)
        stats = self.spool.stats()
        if stats.records:
            logger.warning(
                "%s: %d result(s) stay spooled in %s and are replayed at the next start",
                self.replayer.name,
                stats.items,
                self.spool.directory,
            )
        self.spool.close()
        return stats

    def write(self, items: Sequence[repo.InspectionData]) -> None:
        """Store ``items`` in the database, or durably in the spool (raises only if neither)."""
        if len(self.spool) == 0 and not self.replayer.database_down:
            try:
                self.primary.write(items)
                return
            except Exception as exc:
                if not _transient(exc):
                    raise
                self._warn.warning(
                    "%s: database unavailable (%s); spooling results to %s",
                    self.replayer.name,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    self.spool.directory,
                )
                self.replayer.database_down = True
        self.spool.append(items)
        self.counters.inc("spooled", len(items))


def sink_from_environment(
    station_id: str,
    primary: ResultSink,
    counters: Counters,
    environ: Mapping[str, str] | None = None,
) -> ResultSink:
    """``primary`` wrapped in a :class:`SpoolingSink` when ``INSPECTION_SPOOL_DIR`` is set.

    The station spools to ``$INSPECTION_SPOOL_DIR/<station id>``, at most
    ``INSPECTION_SPOOL_MAX_MB`` MiB (default 2048).
    """
    env = os.environ if environ is None else environ
    root = env.get(ENV_DIR, "").strip()
    if not root:
        return primary
    max_bytes = DEFAULT_MAX_BYTES
    raw = env.get(ENV_MAX_MB, "").strip()
    if raw:
        try:
            max_bytes = int(float(raw) * 1024 * 1024)
        except ValueError:
            raise SpoolError(f"{ENV_MAX_MB}={raw!r} is not a number of MiB") from None
    spool = Spool(Path(root) / station_id, max_bytes=max_bytes, counters=counters)
    return SpoolingSink(primary, spool, counters, name=f"station-{station_id}")


def wait_for_empty(spool: Spool, timeout_s: float, poll_s: float = 0.1) -> bool:
    """Wait until ``spool`` has no records; True when it emptied in time."""
    deadline = time.monotonic() + timeout_s
    while len(spool):
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return True


#: The spool's API, its file format's included (:mod:`.spool_format`).
__all__ = [
    "CorruptRecordError",
    "SPOOL_COUNTERS",
    "Spool",
    "SpoolError",
    "SpoolFullError",
    "SpoolLockedError",
    "SpoolRecord",
    "SpoolReplayer",
    "SpoolStats",
    "SpoolingSink",
    "decode_record",
    "encode_record",
    "item_from_json",
    "item_to_json",
    "sink_from_environment",
    "wait_for_empty",
]
