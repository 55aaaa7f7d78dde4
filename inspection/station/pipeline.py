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

Here the station that wires them together; the threads' own modules: :mod:`.capture`,
:mod:`.scoring` (with :mod:`.regions` and :mod:`.classify`), :mod:`.persist`, and
:mod:`.scoring_model` for the model in use and its thresholds.

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
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from inspection.db.engine import retry_transient, run_in_transaction
from inspection.errors import (
    ConfigError,
    InspectionError,
    ModelFileError,
)
from inspection.runtime import read_metadata
from inspection.station import metrics
from inspection.station.capture import CaptureWorker
from inspection.station.classify import Classifier, load_classifier
from inspection.station.config import StationConfig, compile_cache_dir
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
from inspection.station.scoring import ScoringWorker
from inspection.station.scoring_model import (
    ActiveModel,
    ModelLoader,
    ScoringModel,
    Thresholds,
    bundle_signature,
    load_openvino,
)
from inspection.station.sources import Frame, FrameSource, make_source
from inspection.station.spool import sink_from_environment
from inspection.station.tuning import Tuning, resolve_tuning
from inspection.storage import ArtifactStore, LocalArtifactStore
from inspection.worker import (
    Backoff,
    Counters,
    RateLimitedLog,
    Worker,
    drain,
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
        # Batches are the frames already waiting, 1..batch_size: a fixed shape at batch 1, and
        # for weight-heavy graphs (padded: one repacked copy of the weights, read fast).
        static = tune.batch_size if tune.static_batch or tune.batch_size == 1 else None
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
            sig = bundle_signature(bundle)
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
        sig = bundle_signature(det.path)
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
