"""Prometheus metrics of the stations running in this process, on a small HTTP endpoint.

Stations register themselves when they start (:func:`register`). When
``INSPECTION_METRICS_PORT`` is set, the first registration starts
:func:`prometheus_client.start_http_server` on ``INSPECTION_METRICS_ADDR`` (default
``127.0.0.1``: only the station box itself can scrape it; containers set ``0.0.0.0``) and that
port; one endpoint serves every station of the process, labelled ``station``. Values are read
from each station's counters at scrape time (no work on the hot path):

* ``inspection_station_frames_total{station, stage}``: captured / scored / persisted frames,
* ``inspection_station_events_total{station, event}``: drops, bad frames, reconnects, persist
  retries and failures, spooled / replayed results, ...,
* ``inspection_station_queue_depth{station, queue}``: frames waiting for scoring, results
  waiting to be persisted,
* ``inspection_station_latency_ms{station, stage, quantile}``: p50 / p99 of the recent
  per-stage latencies (``verdict``, ``end_to_end``, ``db_write``, ...),
* ``inspection_station_frames_per_second{station}``: scored frames per second since start,
* ``inspection_station_anomaly_rate{station}``: anomalous / scored since start,
* ``inspection_station_spool_records`` / ``_spool_results`` / ``_spool_bytes{station}``: what
  waits in the local spool for the database.

Frames per second over a window is ``rate(inspection_station_frames_total{stage="scored"}[1m])``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from inspection.errors import ConfigError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

    from inspection.station.pipeline import Station

logger = logging.getLogger(__name__)

ENV_PORT = "INSPECTION_METRICS_PORT"
ENV_ADDR = "INSPECTION_METRICS_ADDR"
DEFAULT_ADDR = "127.0.0.1"
FRAME_STAGES = ("captured", "scored", "persisted")
LATENCY_STAGES = ("verdict", "end_to_end", "db_write", "infer", "queue", "artifacts")


class StationCollector:
    """Reads the registered stations' counters, queues, latencies and spools at scrape time.

    A prometheus_client collector by its ``collect`` method; prometheus_client itself is
    imported only when the endpoint starts or a scrape comes (a station without
    ``INSPECTION_METRICS_PORT`` never imports it: station start time)."""

    def __init__(self) -> None:
        self._stations: dict[int, Station] = {}
        self._lock = threading.Lock()

    def add(self, station: Station) -> None:
        """Start reporting ``station``."""
        with self._lock:
            self._stations[id(station)] = station

    def remove(self, station: Station) -> None:
        """Stop reporting ``station``."""
        with self._lock:
            self._stations.pop(id(station), None)

    def stations(self) -> list[Station]:
        """The stations reported now."""
        with self._lock:
            return list(self._stations.values())

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        frames = CounterMetricFamily(
            "inspection_station_frames", "Frames per pipeline stage.", labels=["station", "stage"]
        )
        events = CounterMetricFamily(
            "inspection_station_events",
            "Drops, bad frames, reconnects, persist retries/failures, spool events.",
            labels=["station", "event"],
        )
        depth = GaugeMetricFamily(
            "inspection_station_queue_depth", "Items waiting.", labels=["station", "queue"]
        )
        latency = GaugeMetricFamily(
            "inspection_station_latency_ms",
            "Recent per-stage latency quantiles, milliseconds.",
            labels=["station", "stage", "quantile"],
        )
        fps = GaugeMetricFamily(
            "inspection_station_frames_per_second",
            "Scored frames per second since the station started.",
            labels=["station"],
        )
        anomaly = GaugeMetricFamily(
            "inspection_station_anomaly_rate",
            "Anomalous / scored frames since the station started.",
            labels=["station"],
        )
        spool_records = GaugeMetricFamily(
            "inspection_station_spool_records", "Spool files waiting.", labels=["station"]
        )
        spool_results = GaugeMetricFamily(
            "inspection_station_spool_results", "Results waiting in the spool.", labels=["station"]
        )
        spool_bytes = GaugeMetricFamily(
            "inspection_station_spool_bytes", "Bytes in the spool.", labels=["station"]
        )
        for station in self.stations():
            sid = station.config.id
            try:
                stats = station.stats()
            except Exception:  # a scrape must never take the station down
                logger.exception("metrics: cannot read station %s", sid)
                continue
            counters: Mapping[str, int] = stats["counters"]
            for stage in FRAME_STAGES:
                frames.add_metric([sid, stage], counters.get(stage, 0))
            for name, value in sorted(counters.items()):
                if name not in FRAME_STAGES:
                    events.add_metric([sid, name], value)
            depth.add_metric([sid, "frames"], stats["in_flight"])
            depth.add_metric([sid, "results"], stats["persist_in_flight"])
            summary: Mapping[str, Mapping[str, float]] = stats["latency_ms"]
            for stage in LATENCY_STAGES:
                if stage in summary:
                    latency.add_metric([sid, stage, "0.5"], summary[stage]["p50"])
                    latency.add_metric([sid, stage, "0.99"], summary[stage]["p99"])
            fps.add_metric([sid], stats["scored_per_second"])
            scored = counters.get("scored", 0)
            anomaly.add_metric([sid], counters.get("anomalous", 0) / scored if scored else 0.0)
            spool = _spool_of(station)
            if spool is not None:
                s = spool.stats()
                spool_records.add_metric([sid], s.records)
                spool_results.add_metric([sid], s.items)
                spool_bytes.add_metric([sid], s.bytes)
        yield from (
            frames,
            events,
            depth,
            latency,
            fps,
            anomaly,
            spool_records,
            spool_results,
            spool_bytes,
        )


def _spool_of(station: Station) -> Any:
    from inspection.station.spool import SpoolingSink

    sink = station.sink
    return sink.spool if isinstance(sink, SpoolingSink) else None


COLLECTOR = StationCollector()
_server_lock = threading.Lock()
_server: tuple[str, int] | None = None


def metrics_address(environ: Mapping[str, str] | None = None) -> tuple[str, int] | None:
    """``(address, port)`` from ``INSPECTION_METRICS_ADDR`` / ``_PORT``; None when off.

    Raises:
        ConfigError: the port is not a number in 1..65535.
    """
    env = os.environ if environ is None else environ
    raw = env.get(ENV_PORT, "").strip()
    if not raw:
        return None
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PORT}={raw!r} is not a port number") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{ENV_PORT}={port} is not in 1..65535")
    return env.get(ENV_ADDR, "").strip() or DEFAULT_ADDR, port


def registry() -> CollectorRegistry:
    """A prometheus_client registry holding :data:`COLLECTOR` (what :func:`serve` serves)."""
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry(auto_describe=False)
    reg.register(COLLECTOR)  # a collector by its collect() method
    return reg


def serve(address: str, port: int) -> None:
    """Serve :data:`COLLECTOR` on ``address:port`` (once per process; later calls do nothing).

    Raises:
        ConfigError: the port cannot be bound (in use, not allowed).
    """
    global _server
    with _server_lock:
        if _server is not None:
            return
        try:
            from prometheus_client import start_http_server

            start_http_server(port, addr=address, registry=registry())
        except OSError as exc:
            raise ConfigError(f"cannot serve station metrics on {address}:{port}: {exc}") from exc
        _server = (address, port)
    logger.info("station metrics on http://%s:%d/metrics", address, port)


def register(station: Station) -> None:
    """Report ``station``; start the endpoint when configured and not yet running."""
    COLLECTOR.add(station)
    where = metrics_address()
    if where is not None:
        serve(*where)


def unregister(station: Station) -> None:
    """Stop reporting ``station`` (the endpoint keeps running for the others)."""
    COLLECTOR.remove(station)


__all__ = [
    "COLLECTOR",
    "StationCollector",
    "metrics_address",
    "register",
    "registry",
    "serve",
    "unregister",
]
