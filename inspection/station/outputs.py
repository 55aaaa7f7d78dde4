"""Result outputs besides the database: the log and an optional JSON webhook.

The webhook posts from its own worker thread through a bounded queue, so a slow or dead
receiver never slows the station: when the queue is full the notification is dropped and
counted (``webhook_dropped``); failed posts count as ``webhook_failures``.
"""

from __future__ import annotations

import json
import logging
import queue
import urllib.error
import urllib.request
from typing import Any

from inspection.db import repo
from inspection.station.config import StationConfig, WebhookConfig
from inspection.station.persist import ScoredFrame
from inspection.worker import Counters, RateLimitedLog, Worker, get_or_none, put_or_drop

logger = logging.getLogger(__name__)


def result_payload(station: str, item: ScoredFrame, row: repo.InspectionData) -> dict[str, Any]:
    """The JSON document describing one persisted result (webhook body)."""
    return {
        "station": station,
        "idempotency_key": row.idempotency_key,
        "frame_ref": row.frame_ref,
        "captured_at": row.captured_at.isoformat(),
        "verdict": str(row.verdict),
        "raw_score": row.raw_score,
        "norm_score": row.norm_score,
        "latency_ms": round(row.latency_ms, 3),
        "model_version_id": row.model_version_id,
        "regions": [
            {
                "x": r.x,
                "y": r.y,
                "w": r.w,
                "h": r.h,
                "area_px": r.area_px,
                "defect_type": r.defect_type,
                "confidence": r.confidence,
                "is_unknown": r.is_unknown,
            }
            for r in row.regions
        ],
    }


class WebhookWorker(Worker):
    """POSTs queued JSON payloads to ``config.url``."""

    def __init__(self, name: str, config: WebhookConfig, counters: Counters) -> None:
        super().__init__(name)
        self.config = config
        self.counters = counters
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=config.queue_size)
        self._warn = RateLimitedLog(logger, interval_s=30.0)

    def step(self) -> bool:
        payload = get_or_none(self.queue)
        if payload is None:
            return True
        request = urllib.request.Request(
            self.config.url,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                response.read()
            self.counters.inc("webhook_sent")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self.counters.inc("webhook_failures")
            self._warn.warning("%s: webhook post failed: %s", self.name, exc)
        return True


class ResultOutputs:
    """Logs results per ``outputs.log`` and feeds the webhook (if configured)."""

    def __init__(self, config: StationConfig, counters: Counters) -> None:
        self.station = config.id
        self.log_mode = config.outputs.log
        self.counters = counters
        hook = config.outputs.webhook
        self.webhook = (
            WebhookWorker(f"station-{config.id}-webhook", hook, counters) if hook else None
        )

    def start(self) -> None:
        if self.webhook is not None:
            self.webhook.start()

    def stop(self) -> None:
        if self.webhook is not None:
            self.webhook.stop()
            self.webhook.join(5.0)

    def emit(self, item: ScoredFrame, row: repo.InspectionData) -> None:
        """Called by the persist stage for each stored result."""
        if self.log_mode == "all" or (self.log_mode == "anomalous" and item.is_anomalous):
            types = ",".join(
                "unknown" if r.is_unknown else (r.defect_type or "?") for r in row.regions
            )
            logger.info(
                "station %s: %s %s score=%.3f regions=%d%s",
                self.station,
                "FAIL" if item.is_anomalous else "pass",
                row.frame_ref,
                item.norm_score,
                len(row.regions),
                f" types={types}" if types else "",
            )
        hook = self.webhook
        if hook is None or (hook.config.only_anomalous and not item.is_anomalous):
            return
        if not put_or_drop(hook.queue, result_payload(self.station, item, row)):
            self.counters.inc("webhook_dropped")
