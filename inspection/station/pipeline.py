"""The station pipeline: camera -> preprocess -> OpenVINO scoring -> threshold -> typing -> store.

Threads (each a :class:`~inspection.worker.Worker`), joined by bounded queues::

    capture --frames(queue_size)--> scoring --results(persist_queue_size)--> persist
                                       ^
    model watcher (polls the database / the bundle, swaps models between batches)

* **capture** reads the camera. When the frame queue is full it drops the new frame
  (``dropped``) or waits (``overflow: wait``, for folders and files). An unusable frame is
  logged and skipped (``bad_frames``). A lost camera is reopened with exponential backoff
  (``reconnects`` counts successful reopenings, ``reconnect_attempts`` every try).
* **scoring** preprocesses (ROI, then resize or letterbox as the model's ``fit`` says), runs the
  detector on the frames already waiting (up to ``batch_size``), applies the station's
  thresholds, segments defect regions of anomalous frames (over the frame's valid region of a
  letterboxed input) and types them with the optional open-set classifier (``scored``).
* **persist** stores artifacts and result rows (``persisted``; see :mod:`.persist`). When it
  falls behind, scoring waits for room (results are never dropped), so the camera drops frames
  instead, visibly.
* **model watcher** re-reads the active model version (database mode) or the bundle's
  ``model.json`` (bundle mode) and the operators' thresholds every ``reload_poll_s``, loads a new
  model in the background and swaps it in between two batches.

Counters always add up: ``captured = scored + dropped + bad_frames + in_flight`` and
``scored = persisted + persist_failures + persist_in_flight``.

Imports no torch and no anomalib: OpenVINO (through :mod:`inspection.runtime`), OpenCV, NumPy.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import cv2
import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from inspection.db import repo
from inspection.db.engine import retry_transient, run_in_transaction
from inspection.errors import (
    CameraError,
    ConfigError,
    FrameError,
    InspectionError,
    ModelFileError,
)
from inspection.geometry import Box as ValidBox
from inspection.geometry import crop_box
from inspection.runtime import Prediction, preprocess_box, read_metadata
from inspection.station import metrics
from inspection.station.config import DetectorSettings, StationConfig, compile_cache_dir
from inspection.station.outputs import ResultOutputs
from inspection.station.persist import (
    ArtifactWriter,
    DatabaseSink,
    PersistWorker,
    ResultSink,
    ScoredFrame,
    StationIds,
    ensure_bundle_version,
    read_station_settings,
    register_station,
)
from inspection.station.sources import END, Frame, FrameSource, make_source
from inspection.station.spool import sink_from_environment
from inspection.station.tuning import Tuning, resolve_tuning
from inspection.storage import ArtifactStore, LocalArtifactStore
from inspection.worker import (
    Backoff,
    Counters,
    RateLimitedLog,
    Worker,
    drain,
    get_or_none,
    get_or_none_now,
    put_or_drop,
    put_until_stopped,
)

logger = logging.getLogger(__name__)

COUNTERS = (
    "captured",
    "scored",
    "persisted",
    "dropped",
    "bad_frames",
    "reconnects",
    "reconnect_attempts",
    "persist_failures",
    "persist_retries",
    "artifact_failures",
    "classifier_errors",
    "anomalous",
    "model_reloads",
    "reload_failures",
)

#: ``(crop (H, W, 3) uint8 RGB, anomaly_map (H, W) float32) -> (label, confidence, is_unknown)``
Classifier = Callable[[np.ndarray, np.ndarray], tuple[str | None, float, bool]]


class Pending(Protocol):
    """An inference in progress (:class:`inspection.runtime.PendingPrediction` fits)."""

    def wait(self, copy_maps: bool = True) -> Prediction:
        """Block until done; the batch's :class:`Prediction`.

        ``copy_maps=False`` allows the maps to be views valid until the next submit on the
        same instance (the worker copies those it keeps).
        """
        ...


class ScoringModel(Protocol):
    """What the pipeline needs of a model (:class:`inspection.runtime.OpenVinoModel` fits).

    A model may also offer ``submit(images) -> Pending`` (start inference, return at once);
    the scoring workers then keep ``requests_per_worker`` batches in flight, one model
    instance (inference request) each. Models without it are called synchronously. A model
    may say how frames become its square input with ``fit`` (``"stretch"`` or ``"pad"``,
    :mod:`inspection.geometry`); without it frames are stretched.
    """

    size: int
    image_threshold: float
    pixel_threshold: float

    def predict(self, images: np.ndarray) -> Prediction:
        """(N, S, S, 3) uint8 RGB -> :class:`Prediction` (normalised score 0.5 at threshold)."""
        ...


#: ``(bundle folder, detector settings, frames per call: 1 exactly, or None: any) -> model``
ModelLoader = Callable[[Path, DetectorSettings, int | None], ScoringModel]


def load_openvino(
    bundle: Path, settings: DetectorSettings, batch_size: int | None = None
) -> ScoringModel:
    """The default model loader: an :class:`OpenVinoModel` with the station's device settings,
    compiled for one frame per call when ``batch_size`` is 1 (static shapes run faster)."""
    from inspection.runtime import OpenVinoModel

    return OpenVinoModel(
        bundle,
        device=settings.device,
        num_threads=settings.num_threads,
        inference_precision=settings.inference_precision,
        performance_hint=settings.performance_hint,
        cpu_pinning=settings.cpu_pinning,
        batch_size=batch_size,
        cache_dir=settings.cache_dir if settings.compile_cache else None,
    )


# -- latency bookkeeping -----------------------------------------------------------------------


class LatencyRecorder:
    """Per-stage latency samples (milliseconds), the most recent ``keep`` per stage."""

    def __init__(self, keep: int = 20_000) -> None:
        self._keep = keep
        self._samples: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, ms: float) -> None:
        """Record one sample of ``stage``."""
        samples = self._samples.get(stage)
        if samples is None:
            with self._lock:
                samples = self._samples.setdefault(stage, deque(maxlen=self._keep))
        samples.append(ms)

    def summary(self) -> dict[str, dict[str, float]]:
        """``{stage: {"n", "mean", "p50", "p99", "max"}}`` in milliseconds."""
        with self._lock:
            stages = {k: np.asarray(list(v), dtype=np.float64) for k, v in self._samples.items()}
        out: dict[str, dict[str, float]] = {}
        for stage, ms in stages.items():
            if ms.size == 0:
                continue
            out[stage] = {
                "n": float(ms.size),
                "mean": float(ms.mean()),
                "p50": float(np.percentile(ms, 50)),
                "p99": float(np.percentile(ms, 99)),
                "max": float(ms.max()),
            }
        return out


# -- model and thresholds ----------------------------------------------------------------------


@dataclass(frozen=True)
class ActiveModel:
    """The model in use, swapped as a whole (a reference assignment) between batches.

    ``models`` holds one instance per scoring worker, each with its own inference request
    (with the throughput hint they share one compiled model's streams); ``signature``
    identifies the loaded bundle (``model.json`` mtime and size) in bundle mode.
    """

    models: tuple[ScoringModel, ...]
    version_id: int | None
    bundle: Path
    signature: tuple[int, int] | None = None
    depth: int = 1  # instances (requests) per worker: models[w * depth : (w + 1) * depth]

    def instance(self, worker: int, slot: int) -> ScoringModel:
        """The model instance scoring worker ``worker`` uses for in-flight slot ``slot``."""
        return self.models[(worker * self.depth + slot % self.depth) % len(self.models)]

    @property
    def model(self) -> ScoringModel:
        """The first instance (all are the same model)."""
        return self.models[0]


@dataclass(frozen=True)
class Thresholds:
    """Thresholds in use: ``image`` on the normalised score; ``pixel`` raw (None: model's)."""

    image: float = 0.5
    pixel: float | None = None


def _signature(bundle: Path) -> tuple[int, int] | None:
    try:
        st = (bundle / "model.json").stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


# -- regions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    """A connected anomalous region in model pixels: box, pixel count and peak map value."""

    x: int
    y: int
    w: int
    h: int
    area: int
    peak: float


def find_regions(
    amap: np.ndarray, threshold: float, max_regions: int = 8, min_area: int = 4
) -> list[Box]:
    """Connected components of ``amap > threshold`` (8-connected), largest peak first.

    When nothing exceeds ``threshold`` (an image flagged by its score alone), the region around
    the map's maximum (pixels >= 80 % of it) is returned instead, so an anomalous frame always
    has something to show and type.
    """
    mask = (amap > threshold).astype(np.uint8)
    if not mask.any():
        peak = float(amap.max())
        mask = (amap >= peak * 0.8 if peak > 0 else amap >= peak).astype(np.uint8)
        min_area = 1
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    boxes = []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area < min_area:
            continue
        peak = float(amap[y : y + h, x : x + w][labels[y : y + h, x : x + w] == i].max())
        boxes.append(Box(x, y, w, h, area, peak))
    boxes.sort(key=lambda b: -b.peak)
    return boxes[:max_regions]


# -- capture -----------------------------------------------------------------------------------


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


# -- scoring -----------------------------------------------------------------------------------


class _InFlight(NamedTuple):
    """A batch submitted to the model, waiting for its result."""

    frames: list[Frame]
    pending: Pending
    active: ActiveModel
    slot: int
    roi: tuple[int, int, int, int] | None  # the region of interest it was cropped with
    boxes: list[ValidBox]  # each frame's valid region in the model input (letterbox)
    t_start: float  # preprocessing began (perf_counter seconds)
    t_submit: float  # inference started


#: ``ScoredFrame.anomaly_map`` of a frame whose retention stores no heatmap
_NO_MAP = np.zeros((0, 0), np.float32)


class _Done:
    """A prediction computed synchronously (models without ``submit``)."""

    def __init__(self, prediction: Prediction) -> None:
        self.prediction = prediction

    def wait(self, copy_maps: bool = True) -> Prediction:
        return self.prediction


class ScoringWorker(Worker):
    """Preprocess, infer, threshold, segment and type frames; hands results to persist.

    Keeps up to ``requests_per_worker`` batches in flight: it submits the next batch before
    finishing the previous one (threshold, regions, hand-off), so OpenVINO's cores do not idle
    while this thread runs Python.
    """

    def __init__(self, name: str, station: Station, index: int = 0) -> None:
        super().__init__(name)
        self.station = station
        self.index = index
        self.busy = 0  # frames taken from the queue, not yet scored or counted bad
        self.holding = 0  # scored results waiting for room in the persist queue
        self.drain_then_stop = False
        self._warn_bad = RateLimitedLog(logger)
        self._depth = station.tuning.requests_per_worker
        self._inflight: deque[_InFlight] = deque()
        self._free_slots = list(range(self._depth))

    def step(self) -> bool:
        st = self.station
        # Block for a frame only when nothing is in flight; otherwise finish what is running.
        first = get_or_none(st.frames) if not self._inflight else get_or_none_now(st.frames)
        if first is not None:
            batch = [first, *drain(st.frames, st.tuning.batch_size - 1)]
            self.busy += len(batch)
            try:
                self._submit(batch)
            except BaseException:
                self.busy -= len(batch)
                raise
        depth = min(self._depth, st.active.depth)  # models without ``submit``: one at a time
        if self._inflight and (first is None or len(self._inflight) >= depth):
            self._finish(self._inflight.popleft())
        if first is None and not self._inflight:
            return not (self.drain_then_stop and st.frames.empty())
        return True

    def teardown(self) -> None:
        while self._inflight:  # stopped with batches running: score them, lose nothing
            self._finish(self._inflight.popleft())

    def _submit(self, batch: list[Frame]) -> None:
        st = self.station
        active = st.active  # one model per batch: swaps happen between batches
        slot = self._free_slots.pop()
        model = active.instance(self.index, slot)
        roi = st.config.roi.as_tuple() if st.config.roi is not None else None
        t0 = time.perf_counter()
        fit = getattr(model, "fit", "stretch")
        frames: list[Frame] = []
        images: list[np.ndarray] = []
        boxes: list[ValidBox] = []
        for frame in batch:
            st.latency.add("queue", (t0 - frame.t_capture) * 1000)
            try:
                image, box = preprocess_box(frame.image, model.size, roi, fit)
                images.append(image)
                boxes.append(box)
                frames.append(frame)
            except (ValueError, cv2.error) as exc:
                st.counters.inc("bad_frames")
                self.busy -= 1
                self._warn_bad.warning("%s: bad frame %s skipped: %s", self.name, frame.ref, exc)
        if not frames:
            self._free_slots.append(slot)
            return
        stacked = images[0][None] if len(images) == 1 else np.stack(images)
        t1 = time.perf_counter()
        submit = getattr(model, "submit", None)
        try:
            pending: Pending = (
                submit(stacked) if submit is not None else _Done(model.predict(stacked))
            )
        except BaseException:
            self._free_slots.append(slot)
            raise
        self._inflight.append(_InFlight(frames, pending, active, slot, roi, boxes, t0, t1))

    def _finish(self, job: _InFlight) -> None:
        st = self.station
        frames, active = job.frames, job.active
        model = active.instance(self.index, job.slot)
        try:
            # Maps as views of the request's output: only those stored are copied, before the
            # slot's next submit (a later step of this thread).
            pred = job.pending.wait(copy_maps=False)
        finally:
            self._free_slots.append(job.slot)
        t2 = time.perf_counter()
        thresholds = st.thresholds
        roi = job.roi
        n = len(frames)
        for _ in range(n):
            st.latency.add("preprocess", (job.t_submit - job.t_start) * 1000 / n)
            st.latency.add("infer", (t2 - job.t_submit) * 1000 / n)
        pixel_thr = thresholds.pixel if thresholds.pixel is not None else model.pixel_threshold
        retention = st.config.retention
        results = []
        for i, frame in enumerate(frames):
            t3 = time.perf_counter()
            norm = float(pred.score[i])
            anomalous = norm > thresholds.image
            regions: list[repo.RegionData] = []
            crops: list[np.ndarray | None] = []
            # the map over the frame's valid region (all of it when stretched): a view
            amap = crop_box(pred.anomaly_map[i], job.boxes[i])
            if anomalous:
                st.counters.inc("anomalous")
                regions, crops = self._regions(frame, amap, pixel_thr, roi)
            t4 = time.perf_counter()
            st.latency.add("postprocess", (t4 - t3) * 1000)
            st.latency.add("verdict", (t4 - frame.t_capture) * 1000)
            results.append(
                ScoredFrame(
                    frame=frame,
                    idempotency_key=frame.key or f"{st.run_id}-{frame.seq}",
                    raw_score=float(pred.raw_score[i]),
                    norm_score=norm,
                    is_anomalous=anomalous,
                    anomaly_map=amap.copy() if retention.keeps_heatmap(anomalous) else _NO_MAP,
                    regions=regions,
                    crops=crops,
                    model_version_id=active.version_id,
                    latency_ms=(t4 - frame.t_capture) * 1000,
                    t_scored=t4,
                )
            )
        self.holding += len(results)
        st.counters.inc("scored", len(results))
        self.busy -= n
        for result in results:
            if not put_until_stopped(st.results, result, st.persist_abort):
                st.counters.inc("persist_failures")
                logger.error("%s: result %s lost at shutdown", self.name, result.idempotency_key)
            self.holding -= 1

    def _regions(
        self,
        frame: Frame,
        amap: np.ndarray,
        pixel_thr: float,
        roi: tuple[int, int, int, int] | None,
    ) -> tuple[list[repo.RegionData], list[np.ndarray | None]]:
        """Regions of an anomalous frame in frame pixels, their crops and types.

        ``amap`` is the model's map over the frame's valid region only (the letterbox box,
        :func:`inspection.geometry.crop_box`), which spans the region of interest (the frame).
        """
        st = self.station
        cfg = st.config.pipeline
        fh, fw = frame.image.shape[:2]
        x0, y0, rw, rh = roi if roi is not None else (0, 0, fw, fh)
        rw, rh = min(rw, fw - x0), min(rh, fh - y0)
        sx, sy = rw / amap.shape[1], rh / amap.shape[0]
        regions: list[repo.RegionData] = []
        crops: list[np.ndarray | None] = []
        for box in find_regions(amap, pixel_thr, cfg.max_regions, cfg.min_region_area_px):
            x = x0 + int(box.x * sx)
            y = y0 + int(box.y * sy)
            w = max(1, round(box.w * sx))
            h = max(1, round(box.h * sy))
            # Crop with a 25 % margin (at least 8 px) so the classifier sees context.
            mx, my = max(8, w // 4), max(8, h // 4)
            cx0, cy0 = max(0, x - mx), max(0, y - my)
            cx1, cy1 = min(fw, x + w + mx), min(fh, y + h + my)
            crop = np.ascontiguousarray(frame.image[cy0:cy1, cx0:cx1])
            label: str | None = None
            confidence: float | None = None
            unknown = False
            if st.classifier is not None and crop.size:
                mx0 = int((cx0 - x0) / sx)
                my0 = int((cy0 - y0) / sy)
                mx1 = max(mx0 + 1, int(np.ceil((cx1 - x0) / sx)))
                my1 = max(my0 + 1, int(np.ceil((cy1 - y0) / sy)))
                map_crop = cv2.resize(
                    np.ascontiguousarray(amap[my0:my1, mx0:mx1]),
                    (crop.shape[1], crop.shape[0]),
                    interpolation=cv2.INTER_LINEAR,
                )
                try:
                    label, conf, unknown = st.classifier(crop, map_crop)
                    confidence = float(conf)
                    if unknown:
                        label = None
                except Exception as exc:
                    st.counters.inc("classifier_errors")
                    logger.warning("%s: classifier failed on %s: %s", self.name, frame.ref, exc)
            regions.append(
                repo.RegionData(
                    x=x,
                    y=y,
                    w=w,
                    h=h,
                    area_px=float(box.area * sx * sy),
                    score=box.peak,
                    defect_type=label,
                    confidence=confidence,
                    is_unknown=bool(unknown),
                )
            )
            crops.append(crop)
        return regions, crops


# -- model watcher -----------------------------------------------------------------------------


class ModelWatcher(Worker):
    """Polls for a new model and new thresholds; loads in this thread, swaps atomically."""

    def __init__(self, name: str, station: Station) -> None:
        super().__init__(name)
        self.station = station
        self._warn = RateLimitedLog(logger, interval_s=60.0)
        self._next_stats = time.monotonic() + station.config.pipeline.stats_interval_s

    def step(self) -> bool:
        st = self.station
        if self.sleep(st.config.pipeline.reload_poll_s):
            return False
        try:
            st.poll_model()
        except Exception as exc:
            st.counters.inc("reload_failures")
            self._warn.warning("%s: model/threshold check failed: %s", self.name, exc)
        interval = st.config.pipeline.stats_interval_s
        if interval and time.monotonic() >= self._next_stats:
            self._next_stats = time.monotonic() + interval
            logger.info("station %s: %s", st.config.id, st.counters.snapshot())
        return True


# -- the station -------------------------------------------------------------------------------


class Station:
    """One running station: its workers, queues, counters, model and thresholds.

    Args:
        config: the validated station config.
        session_factory: database sessions (result rows, model versions, thresholds).
        store: artifact store (default: a :class:`LocalArtifactStore` at ``artifacts_dir``).
        source: camera override (default: built from ``config.camera``); tests inject faults.
        model_loader: bundle folder -> scoring model (default: OpenVINO).
        classifier: open-set typing callable for anomalous regions (None: no typing; default:
            loaded from ``config.classifier`` when set).
        sink: result-row sink override (default: the database).
    """

    def __init__(
        self,
        config: StationConfig,
        *,
        session_factory: sessionmaker[Session],
        store: ArtifactStore | None = None,
        source: FrameSource | None = None,
        model_loader: ModelLoader = load_openvino,
        classifier: Classifier | None = None,
        sink: ResultSink | None = None,
    ) -> None:
        self.config = config
        self.session_factory = session_factory
        self.store = store if store is not None else LocalArtifactStore(config.artifacts_dir)
        self.source = source if source is not None else make_source(config.camera)
        self.model_loader = model_loader
        self.classifier = classifier
        if classifier is None and config.classifier is not None:
            self.classifier = load_classifier(config)
        self.counters = Counters(COUNTERS)
        # INSPECTION_SPOOL_DIR set: spool results locally while the database is unreachable.
        self.sink = (
            sink
            if sink is not None
            else sink_from_environment(config.id, DatabaseSink(session_factory), self.counters)
        )
        self.latency = LatencyRecorder()
        self.run_id = uuid.uuid4().hex[:12]
        pipe = config.pipeline
        self.frames: queue.Queue[Frame] = queue.Queue(maxsize=pipe.queue_size)
        self.results: queue.Queue[ScoredFrame] = queue.Queue(maxsize=pipe.persist_queue_size)
        #: set when shutdown gives up waiting for the persist stage
        self.persist_abort = threading.Event()
        self.ids: StationIds | None = None
        self.active: ActiveModel
        #: scoring settings with ``auto`` resolved (:mod:`inspection.station.tuning`), set when
        #: the first model loads
        self.tuning: Tuning
        self.thresholds = Thresholds()
        self._db_thresholds: tuple[float | None, float | None] = (None, None)
        self.outputs = ResultOutputs(config, self.counters)
        self._capture: CaptureWorker | None = None
        self._scorers: list[ScoringWorker] = []
        self._persist: PersistWorker | None = None
        self._watcher: ModelWatcher | None = None
        self.started_at = 0.0
        self.stopped_at = 0.0

    # -- database ------------------------------------------------------------------------------
    def _tx(self, fn: Callable[[Session], Any], what: str) -> Any:
        return run_in_transaction(
            self.session_factory, fn, what=f"station {self.config.id}: {what}"
        )

    @property
    def station_id(self) -> int:
        if self.ids is None:
            raise InspectionError(f"station {self.config.id} is not started")
        return self.ids.station_id

    # -- models --------------------------------------------------------------------------------
    def _load(
        self, bundle: Path, version_id: int | None, sig: tuple[int, int] | None
    ) -> ActiveModel:
        tune = self.tuning
        det = self.config.detector.model_copy(update={"performance_hint": tune.performance_hint})
        if det.cpu_pinning is None and tune.infer_workers > 1 and det.performance_hint == "latency":
            det = det.model_copy(update={"cpu_pinning": False})  # one compiled model per worker
        if det.compile_cache and det.cache_dir is None:
            det = det.model_copy(update={"cache_dir": compile_cache_dir(self.config)})
        # Batches are the frames already waiting, 1..batch_size: only batch 1 is a fixed shape.
        static = 1 if tune.batch_size == 1 else None
        first = self.model_loader(bundle, det, static)
        # Throughput hint: one compiled model whose parallel streams the workers share, a
        # request each (where the model offers it); otherwise one compiled model per worker.
        # A worker's further requests in flight are siblings of its own compiled model.
        sibling = getattr(first, "sibling", None)
        depth = tune.requests_per_worker if hasattr(first, "submit") else 1
        models_list: list[ScoringModel] = []
        for w in range(tune.infer_workers):
            if w == 0:
                own = first
            elif sibling is not None and det.performance_hint == "throughput":
                own = sibling()
            else:
                own = self.model_loader(bundle, det, static)
            twin = getattr(own, "sibling", None)
            models_list.append(own)
            for _ in range(depth - 1):
                models_list.append(
                    twin() if twin is not None else self.model_loader(bundle, det, static)
                )
        models = tuple(models_list)
        size = models[0].size
        if self.config.resize is not None and self.config.resize != size:
            raise ConfigError(
                f"station {self.config.id}: resize {self.config.resize} does not match the "
                f"model's input size {size} ({bundle})"
            )
        # One inference per request before the model goes live: OpenVINO allocates a request's
        # memory on its first call, which the first parts after a start or reload would wait for.
        blank = np.zeros((1, size, size, 3), dtype=np.uint8)
        for model in models:
            model.predict(blank)
        return ActiveModel(models, version_id, bundle, sig, depth)

    def _tune(self, bundle: Path) -> None:
        """Resolve the ``auto`` scoring settings for the first model (kept across reloads)."""
        self.tuning = resolve_tuning(self.config, bundle)
        t = self.tuning
        logger.info(
            "station %s: scoring with batch %d, %d worker(s), %d request(s) each, %s hint (%s)",
            self.config.id,
            t.batch_size,
            t.infer_workers,
            t.requests_per_worker,
            t.performance_hint,
            t.reason,
        )

    def _initial_model(self) -> ActiveModel:
        det = self.config.detector
        if det.source == "bundle":
            assert det.path is not None
            bundle = det.path
            self._tune(bundle)
            sig = _signature(bundle)
            meta = read_metadata(bundle)
            version_id = self._tx(
                lambda s: ensure_bundle_version(
                    s,
                    station_id=self.station_id,
                    bundle_dir=bundle,
                    meta=meta,
                    actor=f"station:{self.config.id}",
                ),
                "register bundle",
            )
            return self._load(bundle, version_id, sig)
        settings = self._tx(lambda s: read_station_settings(s, self.station_id), "read settings")
        if settings.model_version_id is None or not settings.artifact_path:
            raise ModelFileError(
                f"station {self.config.id} has no active model version in the database: "
                "activate one, or add detector.bootstrap to its config"
            )
        self._tune(Path(settings.artifact_path))
        return self._load(Path(settings.artifact_path), settings.model_version_id, None)

    def _apply_thresholds(self, db_image: float | None, db_pixel: float | None) -> None:
        cfg = self.config
        image = db_image if db_image is not None else cfg.image_threshold
        pixel = db_pixel if db_pixel is not None else cfg.pixel_threshold
        new = Thresholds(image=image if image is not None else 0.5, pixel=pixel)
        if new != self.thresholds:
            logger.info("station %s: thresholds image=%.3f pixel=%s", cfg.id, new.image, new.pixel)
            self.thresholds = new

    def poll_model(self) -> None:
        """Check the database (thresholds; active model) or the bundle for changes; swap."""
        settings = self._tx(lambda s: read_station_settings(s, self.station_id), "read settings")
        self._apply_thresholds(settings.image_threshold, settings.pixel_threshold)
        current = self.active
        det = self.config.detector
        if det.source == "database":
            if settings.model_version_id in (None, current.version_id):
                return
            assert settings.artifact_path is not None
            bundle = Path(settings.artifact_path)
            self._swap(self._load(bundle, settings.model_version_id, None))
            return
        assert det.path is not None
        sig = _signature(det.path)
        if sig is None or sig == current.signature:
            return
        meta = read_metadata(det.path)
        loaded = self._load(det.path, None, sig)
        version_id = self._tx(
            lambda s: ensure_bundle_version(
                s,
                station_id=self.station_id,
                bundle_dir=det.path,  # type: ignore[arg-type]
                meta=meta,
                actor=f"station:{self.config.id}",
            ),
            "register bundle",
        )
        self._swap(replace(loaded, version_id=version_id))

    def _swap(self, new: ActiveModel) -> None:
        old = self.active
        self.active = new  # the scoring thread picks it up at its next batch
        self.counters.inc("model_reloads")
        logger.info(
            "station %s: model swapped to version %s (%s), was %s",
            self.config.id,
            new.version_id,
            new.bundle,
            old.version_id,
        )

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, max_frames: int | None = None) -> None:
        """Register in the database, load the model and start the workers.

        Raises:
            DatabaseError: the database stays unavailable.
            ModelFileError / ConfigError: no usable model.
        """
        cfg = self.config
        self.ids = retry_transient(
            lambda: self._tx(lambda s: register_station(s, cfg), "register"),
            what=f"station {cfg.id}: register",
        )
        self.active = self._initial_model()
        settings = self._tx(lambda s: read_station_settings(s, self.station_id), "read settings")
        self._apply_thresholds(settings.image_threshold, settings.pixel_threshold)
        rc = cfg.camera.reconnect
        name = f"station-{cfg.id}"
        self._persist = PersistWorker(
            f"{name}-persist",
            self.results,
            station_id=self.ids.station_id,
            camera_id=self.ids.camera_id,
            sink=self.sink,
            artifacts=ArtifactWriter(self.store, cfg.retention),
            counters=self.counters,
            batch_size=cfg.pipeline.persist_batch,
            linger_s=cfg.pipeline.persist_linger_ms / 1000,
            retry_s=cfg.pipeline.persist_retry_s,
            on_result=self.outputs.emit,
            stage_ms=self.latency.add,
        )
        self._scorers = [
            ScoringWorker(f"{name}-score{i}" if i else f"{name}-score", self, i)
            for i in range(self.tuning.infer_workers)
        ]
        self._capture = CaptureWorker(
            f"{name}-capture",
            self.source,
            self.frames,
            self.counters,
            Backoff(rc.initial_s, rc.max_s),
            max_frames=max_frames,
        )
        self._watcher = ModelWatcher(f"{name}-watch", self)
        self.outputs.start()
        start_sink = getattr(self.sink, "start", None)
        if callable(start_sink):
            start_sink()  # a spooling sink opens its spool and starts replaying it
        metrics.register(self)
        self.started_at = time.perf_counter()
        for worker in (self._persist, *self._scorers, self._watcher, self._capture):
            worker.start()
        logger.info(
            "station %s started: camera %s, model version %s, %s",
            cfg.id,
            self.source.describe(),
            self.active.version_id,
            self.thresholds,
        )

    @property
    def _scoring(self) -> ScoringWorker | None:
        """The first scoring worker (kept for callers written before there could be several)."""
        return self._scorers[0] if self._scorers else None

    @property
    def capture_finished(self) -> bool:
        """True when the camera has no more frames (finite source or ``max_frames`` reached)."""
        return self._capture is not None and self._capture.finished.is_set()

    def stop(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Stop capturing, finish scoring and persisting what was captured, stop; return stats.

        Waits up to ``timeout_s`` (default: ``persist_retry_s`` + 30 s) for the queues to empty;
        frames still unscored then count as ``dropped``, results still unpersisted as
        ``persist_failures``.
        """
        cfg = self.config
        timeout = timeout_s if timeout_s is not None else cfg.pipeline.persist_retry_s + 30.0
        deadline = time.monotonic() + timeout
        capture, scorers, persist = self._capture, self._scorers, self._persist
        if capture is None or not scorers or persist is None:
            return self.stats()
        capture.stop()
        capture.join(max(0.0, deadline - time.monotonic()))
        for scoring in scorers:
            scoring.drain_then_stop = True
        for scoring in scorers:
            if not scoring.join(max(0.0, deadline - time.monotonic())):
                scoring.stop()
                self.persist_abort.set()
                scoring.join(5.0)
        left = drain(self.frames, self.frames.maxsize + 1)
        if left:
            self.counters.inc("dropped", len(left))
            logger.warning(
                "station %s: %d captured frames not scored at shutdown", cfg.id, len(left)
            )
        persist.drain_then_stop = True
        if not persist.join(max(0.0, deadline - time.monotonic())):
            persist.stop()
            persist.join(5.0)
        lost = drain(self.results, self.results.maxsize + 1)
        if lost:
            self.counters.inc("persist_failures", len(lost))
            logger.error(
                "station %s: %d results not persisted at shutdown (first %s)",
                cfg.id,
                len(lost),
                lost[0].idempotency_key,
            )
        stop_sink = getattr(self.sink, "stop", None)
        if callable(stop_sink):
            stop_sink(max(1.0, deadline - time.monotonic()))  # replay what the spool holds
        metrics.unregister(self)
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher.join(5.0)
        self.outputs.stop()
        self.stopped_at = time.perf_counter()
        stats = self.stats()
        logger.info("station %s stopped: %s", cfg.id, stats["counters"])
        return stats

    def run(
        self,
        *,
        max_frames: int | None = None,
        duration_s: float | None = None,
        stop: threading.Event | None = None,
    ) -> dict[str, Any]:
        """Start, run until the camera ends, ``max_frames``, ``duration_s`` or ``stop``; stop."""
        self.start(max_frames=max_frames)
        wait_until_done([self], duration_s=duration_s, stop=stop)
        return self.stop()

    def stats(self) -> dict[str, Any]:
        """Counters, in-flight frames, latencies (ms), throughput and the model in use."""
        c = self.counters.snapshot()
        scoring_busy = sum(w.busy for w in self._scorers)
        holding = sum(w.holding for w in self._scorers)
        persist_busy = (self._persist.busy if self._persist is not None else 0) + holding
        end = self.stopped_at or time.perf_counter()
        first_frame = (
            self._capture.first_frame_at
            if self._capture is not None and self._capture.first_frame_at is not None
            else self.started_at
        )
        elapsed = max(1e-9, end - self.started_at) if self.started_at else 0.0
        active = getattr(self, "active", None)
        tuning: Tuning | None = getattr(self, "tuning", None)
        return {
            "station": self.config.id,
            "counters": c,
            "in_flight": self.frames.qsize() + scoring_busy,
            "persist_in_flight": self.results.qsize() + persist_busy,
            "elapsed_s": elapsed,
            # first frame read -> latest result stored: the span throughput is over (opening
            # the camera and shutting down excluded; filling and draining the queues included)
            "persisting_s": (
                self._persist.last_persisted_at - first_frame
                if self._persist is not None and self._persist.last_persisted_at is not None
                else 0.0
            ),
            "scored_per_second": c["scored"] / elapsed if elapsed else 0.0,
            "persisted_per_second": c["persisted"] / elapsed if elapsed else 0.0,
            "latency_ms": self.latency.summary(),
            "model_version_id": active.version_id if active is not None else None,
            "tuning": tuning.as_dict() if tuning is not None else None,
            "precision": getattr(active.model, "precision", None) if active is not None else None,
            "thresholds": {"image": self.thresholds.image, "pixel": self.thresholds.pixel},
        }


def wait_until_done(
    stations: list[Station],
    *,
    duration_s: float | None = None,
    stop: threading.Event | None = None,
    poll_s: float = 0.1,
) -> None:
    """Block until every station's camera is finished, ``duration_s`` passed or ``stop`` set."""
    deadline = time.monotonic() + duration_s if duration_s is not None else None
    event = stop or threading.Event()
    while not event.is_set():
        if all(s.capture_finished for s in stations):
            return
        if deadline is not None and time.monotonic() >= deadline:
            return
        event.wait(poll_s)


def load_classifier(config: StationConfig) -> Classifier:
    """The open-set typing callable named by ``config.classifier`` (``module:function(path)``).

    Raises:
        ConfigError: the loader cannot be imported or fails.
    """
    import importlib

    cc = config.classifier
    assert cc is not None
    module_name, _, attr = cc.loader.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"station {config.id}: classifier loader {cc.loader!r} is not available: {exc}"
        ) from exc
    kwargs = {} if cc.known_accept_rate is None else {"known_accept_rate": cc.known_accept_rate}
    try:
        classifier: Classifier = factory(cc.path, **kwargs)
    except InspectionError:
        raise
    except Exception as exc:
        raise ConfigError(f"station {config.id}: cannot load classifier {cc.path}: {exc}") from exc
    return classifier
