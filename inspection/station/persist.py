"""Persisting station results: artifacts to the store, rows to the database, with retries.

The persist stage (:class:`PersistWorker`) takes scored frames from a bounded queue, encodes and
stores their artifacts according to the station's retention settings, and writes the result rows
in batches (one transaction per batch) through a :class:`ResultSink`. A briefly unavailable
database is retried with backoff (counted as ``persist_retries``); results that still cannot be
written after ``persist_retry_s`` are counted as ``persist_failures``, logged with their
idempotency keys and handed to ``on_failure`` (the hook a disk spool will use).

Also the station's own data-access helpers that :mod:`inspection.db.repo` does not have:
registering a station and its camera, recording a bundle as the station's active model version,
and reading the station's live settings (active model, operator thresholds).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from inspection.db import repo
from inspection.db.engine import is_transient, run_in_transaction
from inspection.db.models import ArtifactKind, ModelStatus, ModelVersion, Verdict
from inspection.errors import DatabaseError, StorageError
from inspection.station.config import RetentionConfig, StationConfig
from inspection.station.sources import Frame
from inspection.storage import ArtifactStore, encode_heatmap, heatmap_stats
from inspection.worker import Backoff, Counters, RateLimitedLog, Worker, drain, get_or_none

logger = logging.getLogger(__name__)


# -- what the scoring stage hands over ---------------------------------------------------------


@dataclass
class ScoredFrame:
    """A frame with its verdict, ready to persist.

    Attributes:
        frame: the captured frame (RGB image, reference, capture times).
        idempotency_key: unique per station (``<run id>-<seq>`` or the source's key).
        raw_score / norm_score: detector image score, raw and normalised (0..1).
        is_anomalous: verdict (norm_score above the station's image threshold).
        anomaly_map: (h, w) float32 raw anomaly map at model resolution over the frame's
            valid region (the region of interest): (S, S) for a stretching model, the
            letterbox box of a padding one (:func:`inspection.geometry.crop_box`), so resizing
            it to the region's size lays it over the pixels; (0, 0) when the retention
            settings store no heatmap for this verdict (:meth:`RetentionConfig.keeps_heatmap`).
        regions: defect regions (frame pixel boxes, type when typed).
        crops: (h, w, 3) uint8 RGB crop of each region from the frame, or None.
        model_version_id: database id of the model that scored it (None when unknown).
        latency_ms: capture -> verdict, milliseconds.
        t_scored: ``time.perf_counter()`` at the verdict.
    """

    frame: Frame
    idempotency_key: str
    raw_score: float
    norm_score: float
    is_anomalous: bool
    anomaly_map: np.ndarray
    regions: list[repo.RegionData] = field(default_factory=list)
    crops: list[np.ndarray | None] = field(default_factory=list)
    model_version_id: int | None = None
    latency_ms: float = 0.0
    t_scored: float = 0.0


# -- station registration and live settings ----------------------------------------------------


@dataclass(frozen=True)
class StationIds:
    """Database ids of a running station and its camera."""

    station_id: int
    camera_id: int | None


def register_station(session: Session, config: StationConfig) -> StationIds:
    """Create or update the station (and its line and camera) described by ``config``.

    The operators' thresholds are deliberately not written: they belong to the operators. The
    file's thresholds are recorded as the station's configured ones (``config_*_threshold``),
    which it applies while the operators have set none, so the UI can show what applies.
    """
    station = repo.upsert_station(
        session,
        name=config.id,
        line_name=config.line,
        description=config.description,
        retention_days=config.retention.days,
    )
    repo.record_config_thresholds(
        session,
        station_id=station.id,
        image_threshold=config.image_threshold,
        pixel_threshold=config.pixel_threshold,
    )
    cam = config.camera
    settings: dict[str, Any] = {"type": cam.type}
    if cam.type == "synthetic":
        settings.update(family=cam.family, seed=cam.seed, size=cam.size)
    camera = repo.upsert_camera(
        session, station_id=station.id, name=cam.camera_name(), settings=settings
    )
    return StationIds(station.id, camera.id)


@dataclass(frozen=True)
class StationSettings:
    """What the station re-reads from the database: active model and operator thresholds."""

    model_version_id: int | None
    artifact_path: str | None
    image_threshold: float | None
    pixel_threshold: float | None


def read_station_settings(session: Session, station_id: int) -> StationSettings:
    """The station's active model version (id, bundle path) and its database thresholds."""
    station = repo.get_station(session, station_id)
    active = repo.get_active_model(session, station_id)
    return StationSettings(
        model_version_id=active.id if active is not None else None,
        artifact_path=active.artifact_path if active is not None else None,
        image_threshold=station.image_threshold,
        pixel_threshold=station.pixel_threshold,
    )


def ensure_bundle_version(
    session: Session,
    *,
    station_id: int,
    bundle_dir: Path,
    meta: dict[str, Any],
    actor: str,
) -> int:
    """The id of the model version row for a bundle a station runs from its config path.

    A bundle is identified by its resolved path and ``model.json``'s ``created`` stamp; a new
    export into the same folder is a new version. The version is made the station's active one
    (in bundle mode the config decides which model runs, and the database records it).
    """
    path = str(bundle_dir.resolve())
    created = str(meta.get("created", ""))
    candidates = session.scalars(
        select(ModelVersion).where(
            ModelVersion.station_id == station_id, ModelVersion.artifact_path == path
        )
    )
    version = next((v for v in candidates if v.config.get("bundle_created") == created), None)
    if version is None:
        version = repo.register_model_version(
            session,
            station_id=station_id,
            name=f"{meta.get('detector', 'model')}@{created or 'bundle'}"[:100],
            detector_type=str(meta.get("detector", "unknown")),
            artifact_path=path,
            config={
                "bundle_created": created,
                "precision": meta.get("precision"),
                "registered_from": "station bundle path",
            },
            metrics={"calibration": meta.get("calibration", {})},
            registered_by=actor,
        )
    if version.status != ModelStatus.ACTIVE:
        repo.set_model_status(
            session, model_version_id=version.id, status=ModelStatus.ACTIVE, changed_by=actor
        )
    return version.id


# -- sinks -------------------------------------------------------------------------------------


class ResultSink(Protocol):
    """Where result rows go. ``write`` stores all items or raises (one transaction)."""

    def write(self, items: Sequence[repo.InspectionData]) -> None:
        """Store ``items`` atomically; raise on failure."""
        ...


class DatabaseSink:
    """Writes result rows in one transaction per batch.

    Optimistic: a batch of new keys (the normal case) goes through
    :func:`repo.insert_new_inspections` (no savepoint, no ids fetched for passing parts). If a
    key is already stored (a spool replay, a retry after a commit whose acknowledgement was
    lost), that transaction is rolled back and the batch is written again with
    :func:`repo.insert_inspections`, which keeps the stored rows and adds the rest.
    """

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    def write(self, items: Sequence[repo.InspectionData]) -> None:
        rows = list(items)
        try:
            run_in_transaction(
                self.session_factory,
                lambda s: repo.insert_new_inspections(s, rows),
                attempts=1,
                what="station result write",
            )
        except IntegrityError:
            run_in_transaction(
                self.session_factory,
                lambda s: repo.insert_inspections(s, rows),
                attempts=1,
                what="station result write",
            )


def _transient(exc: BaseException) -> bool:
    """Errors worth retrying: database unavailable/busy (wrapped or not)."""
    if isinstance(exc, DatabaseError):
        return True
    return isinstance(exc, DBAPIError) and is_transient(exc)


# -- artifacts ---------------------------------------------------------------------------------


def _wants(policy: str, anomalous: bool) -> bool:
    return policy == "all" or (policy == "anomalous" and anomalous)


class ArtifactWriter:
    """Encodes and stores a scored frame's artifacts according to :class:`RetentionConfig`."""

    def __init__(self, store: ArtifactStore, retention: RetentionConfig) -> None:
        self.store = store
        self.retention = retention
        if retention.frame_format == "jpeg":
            self._ext, self._media = "jpg", "image/jpeg"
            self._params = [cv2.IMWRITE_JPEG_QUALITY, retention.jpeg_quality]
        else:
            self._ext, self._media = "png", "image/png"
            self._params = [cv2.IMWRITE_PNG_COMPRESSION, 1]

    def _image(
        self, rgb: np.ndarray, kind: ArtifactKind, region_index: int | None = None
    ) -> repo.ArtifactData:
        ok, buf = cv2.imencode(f".{self._ext}", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), self._params)
        if not ok:
            raise StorageError(f"cannot encode {kind.value} as {self._ext}")
        stored = self.store.put_bytes(buf.tobytes(), ext=self._ext)
        return repo.ArtifactData.from_stored(
            stored,
            kind=kind,
            media_type=self._media,
            width_px=int(rgb.shape[1]),
            height_px=int(rgb.shape[0]),
            region_index=region_index,
        )

    def _heatmap(self, amap: np.ndarray, full: np.ndarray) -> repo.ArtifactData:
        stats = heatmap_stats(full)
        stored = self.store.put_bytes(encode_heatmap(amap), ext="npz")
        return repo.ArtifactData.from_stored(
            stored,
            kind=ArtifactKind.HEATMAP,
            media_type="application/x-npz",
            width_px=int(amap.shape[1]),
            height_px=int(amap.shape[0]),
            heatmap_max=stats.max,
            heatmap_mean=stats.mean,
        )

    def write(self, item: ScoredFrame) -> list[repo.ArtifactData]:
        """Store the artifacts ``item`` keeps; raises :class:`StorageError` on failure."""
        r = self.retention
        out: list[repo.ArtifactData] = []
        if _wants(r.frames, item.is_anomalous):
            out.append(self._image(item.frame.image, ArtifactKind.FRAME))
        amap = item.anomaly_map
        if _wants(r.heatmaps, item.is_anomalous):
            out.append(self._heatmap(amap, amap))
        elif r.pass_heatmap_size:
            k = r.pass_heatmap_size
            small = (
                cv2.resize(amap, (k, k), interpolation=cv2.INTER_AREA)
                if amap.shape != (k, k)
                else amap
            )
            out.append(self._heatmap(small, amap))
        if r.crops:
            for i, crop in enumerate(item.crops):
                if crop is not None and crop.size:
                    out.append(self._image(crop, ArtifactKind.CROP, region_index=i))
        return out


# -- the persist stage -------------------------------------------------------------------------

FailureHook = Callable[[Sequence[repo.InspectionData], BaseException], None]


def _log_failure(items: Sequence[repo.InspectionData], exc: BaseException) -> None:
    keys = ", ".join(i.idempotency_key for i in items[:10])
    more = f" and {len(items) - 10} more" if len(items) > 10 else ""
    logger.error("could not persist %d result(s) (%s%s): %s", len(items), keys, more, exc)


class PersistWorker(Worker):
    """Drains the result queue: artifacts, then result rows in batches, retried when transient.

    Counters: ``persisted``, ``persist_failures``, ``persist_retries``, ``artifact_failures``.
    ``linger_s``: how long to wait for more results to fill a batch (larger transactions cost
    less CPU per result). ``stage_ms`` (a callable taking stage name and milliseconds) records per-frame latencies
    (``artifacts``, ``db_write`` per frame of the batch, ``end_to_end`` capture -> persisted).
    ``on_result`` is called for each persisted result (logging, webhook).
    """

    def __init__(
        self,
        name: str,
        results: Any,
        *,
        station_id: int,
        camera_id: int | None,
        sink: ResultSink,
        artifacts: ArtifactWriter,
        counters: Counters,
        batch_size: int = 32,
        linger_s: float = 0.0,
        retry_s: float = 60.0,
        on_failure: FailureHook = _log_failure,
        on_result: Callable[[ScoredFrame, repo.InspectionData], None] | None = None,
        stage_ms: Callable[[str, float], None] | None = None,
        retry_backoff: Backoff | None = None,
    ) -> None:
        super().__init__(name)
        self.results = results
        self.station_id = station_id
        self.camera_id = camera_id
        self.sink = sink
        self.artifacts = artifacts
        self.counters = counters
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.retry_s = retry_s
        self.on_failure = on_failure
        self.on_result = on_result
        self.stage_ms = stage_ms or (lambda _stage, _ms: None)
        self.backoff = retry_backoff or Backoff(0.2, 5.0)
        self.busy = 0  # results taken from the queue but not yet persisted or failed
        #: ``time.perf_counter()`` when the latest batch was stored (None: none yet)
        self.last_persisted_at: float | None = None
        #: set by the pipeline when it wants the queue emptied and the worker to end
        self.drain_then_stop = False
        self._warn = RateLimitedLog(logger)

    def step(self) -> bool:
        first = get_or_none(self.results)
        if first is None:
            return not (self.drain_then_stop and self.results.empty())
        batch: list[ScoredFrame] = [first, *drain(self.results, self.batch_size - 1)]
        self.busy = len(batch)
        deadline = time.monotonic() + self.linger_s
        while len(batch) < self.batch_size and not self.stop_event.is_set():
            left = deadline - time.monotonic()
            more = get_or_none(self.results, left) if left > 0 else None
            if more is None:
                break
            batch.append(more)
            self.busy = len(batch)
        try:
            self._persist(batch)
        finally:
            self.busy = 0
        return True

    def _to_row(self, item: ScoredFrame) -> repo.InspectionData:
        t0 = time.perf_counter()
        try:
            arts = self.artifacts.write(item)
        except (StorageError, OSError, ValueError) as exc:
            self.counters.inc("artifact_failures")
            self._warn.warning("artifacts of %s not stored: %s", item.idempotency_key, exc)
            arts = []
        self.stage_ms("artifacts", (time.perf_counter() - t0) * 1000)
        assert item.frame.captured_at is not None
        return repo.InspectionData(
            station_id=self.station_id,
            camera_id=self.camera_id,
            captured_at=item.frame.captured_at,
            frame_ref=item.frame.ref[:512],
            model_version_id=item.model_version_id,
            raw_score=item.raw_score,
            norm_score=item.norm_score,
            verdict=Verdict.FAIL if item.is_anomalous else Verdict.PASS,
            latency_ms=item.latency_ms,
            idempotency_key=item.idempotency_key,
            regions=item.regions,
            artifacts=arts,
        )

    def _persist(self, batch: list[ScoredFrame]) -> None:
        rows = [self._to_row(item) for item in batch]
        t0 = time.perf_counter()
        stored = self._write(rows)
        t1 = time.perf_counter()
        per_frame = (t1 - t0) * 1000 / len(rows)
        for item, row, ok in zip(batch, rows, stored, strict=True):
            if not ok:
                continue
            self.stage_ms("db_write", per_frame)
            self.stage_ms("end_to_end", (t1 - item.frame.t_capture) * 1000)
            if self.on_result is not None:
                try:
                    self.on_result(item, row)
                except Exception:
                    logger.exception("result output failed for %s", row.idempotency_key)
        self.counters.inc("persisted", sum(stored))
        if any(stored):
            self.last_persisted_at = t1

    def _write(self, rows: list[repo.InspectionData]) -> list[bool]:
        """Write ``rows`` (one transaction); per row, whether it is stored.

        Transient errors are retried with backoff for up to ``retry_s`` (not interrupted by a
        stop request: shutdown waits rather than lose results). After a non-transient error a
        batch is retried row by row, so one bad row cannot take its batch with it. Rows that
        cannot be stored are counted as ``persist_failures`` and handed to ``on_failure``.
        """
        deadline = time.monotonic() + self.retry_s
        self.backoff.reset()
        while True:
            try:
                self.sink.write(rows)
                return [True] * len(rows)
            except Exception as exc:
                transient = _transient(exc)
                if transient and time.monotonic() < deadline:
                    self.counters.inc("persist_retries")
                    delay = min(self.backoff.next_delay(), max(0.0, deadline - time.monotonic()))
                    self._warn.warning(
                        "database unavailable, retrying %d result(s) in %.1f s: %s",
                        len(rows),
                        delay,
                        _first_line(exc),
                    )
                    time.sleep(delay)
                    continue
                if not transient and len(rows) > 1:
                    return [self._write([row])[0] for row in rows]
                self.counters.inc("persist_failures", len(rows))
                try:
                    self.on_failure(rows, exc)
                except Exception:
                    logger.exception("persist failure hook failed")
                return [False] * len(rows)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = [
    "ArtifactWriter",
    "DatabaseSink",
    "PersistWorker",
    "ResultSink",
    "ScoredFrame",
    "StationIds",
    "StationSettings",
    "ensure_bundle_version",
    "read_station_settings",
    "register_station",
]
