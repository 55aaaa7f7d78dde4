"""The station's scoring threads: frame queue -> preprocess -> model -> thresholds -> regions
and types -> result queue (see :mod:`.pipeline`)."""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING, NamedTuple

import cv2
import numpy as np

from inspection.db import repo
from inspection.geometry import Box as ValidBox
from inspection.geometry import crop_box
from inspection.runtime import Prediction, preprocess_box
from inspection.station.persist import ScoredFrame
from inspection.station.regions import find_regions
from inspection.station.scoring_model import ActiveModel, Pending
from inspection.station.sources import Frame
from inspection.worker import (
    RateLimitedLog,
    Worker,
    drain,
    get_or_none,
    get_or_none_now,
    put_until_stopped,
)

if TYPE_CHECKING:
    from inspection.station.pipeline import Station

logger = logging.getLogger(__name__)


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
