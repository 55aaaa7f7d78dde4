"""Prometheus metrics of the review app at ``GET /metrics`` (text exposition format).

Two kinds of series, in a registry of the app's own (several apps in one process, as in the
tests, do not share counters):

* the HTTP layer, counted by :class:`RequestMetrics` (pure ASGI middleware):
  ``inspection_api_requests_total{method, route, status}`` and
  ``inspection_api_request_seconds{method, route}`` (histogram); ``route`` is the matched path
  template (``/api/inspections/{inspection_id}``), never the raw path, so ids do not explode
  the label set;
* what the stations stored, read from the database at scrape time over the last
  ``WINDOW_S`` seconds (:class:`StoredResultsCollector`):
  ``inspection_stored_per_second{station}``, ``inspection_anomaly_rate{station}``,
  ``inspection_stored_latency_ms{station, stat=mean|max}`` (capture -> verdict, as the
  stations recorded it), ``inspection_last_result_age_seconds{station}`` and
  ``inspection_api_database_up`` (0 when the database did not answer the scrape; the endpoint
  itself still answers 200).

Live station internals (queue depth, drops, spool size) come from each station's own endpoint
(:mod:`inspection.station.metrics`). ``/metrics`` shows only aggregates and station names, and
needs no user login but ``Authorization: Bearer <token>`` with the token from
``INSPECTION_API_METRICS_TOKEN`` (401 without it); with no token set it is off (404), unless
``INSPECTION_API_METRICS_PUBLIC=true`` opts in to an open endpoint, which then belongs on an
internal-only network or port (the Kubernetes and compose files do not route it outside).
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inspection.db.models import Inspection, Station, Verdict

if TYPE_CHECKING:
    from inspection.api.deps import AppContext

log = logging.getLogger(__name__)

#: The window the stored-results gauges cover, seconds.
WINDOW_S = 300.0


class RequestMetrics:
    """Pure ASGI middleware counting requests and timing them by route template."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "inspection_api_requests",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.seconds = Histogram(
            "inspection_api_request_seconds",
            "HTTP request duration, seconds.",
            ["method", "route"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        t0 = time.perf_counter()

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            method = str(scope.get("method", "?"))
            self.requests.labels(method, template, str(status)).inc()
            self.seconds.labels(method, template).observe(time.perf_counter() - t0)


class StoredResultsCollector(Collector):
    """Per-station throughput, anomaly rate and latency of recently stored results."""

    def __init__(self, ctx: AppContext, window_s: float = WINDOW_S) -> None:
        self.ctx = ctx
        self.window_s = window_s

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "inspection_api_database_up", "1 when the database answered this scrape."
        )
        rate = GaugeMetricFamily(
            "inspection_stored_per_second",
            f"Results stored per second over the last {self.window_s:.0f} s.",
            labels=["station"],
        )
        anomaly = GaugeMetricFamily(
            "inspection_anomaly_rate",
            f"Failed / stored results over the last {self.window_s:.0f} s.",
            labels=["station"],
        )
        latency = GaugeMetricFamily(
            "inspection_stored_latency_ms",
            f"Capture-to-verdict latency of results of the last {self.window_s:.0f} s, ms.",
            labels=["station", "stat"],
        )
        age = GaugeMetricFamily(
            "inspection_last_result_age_seconds",
            "Seconds since the newest result of the window was captured.",
            labels=["station"],
        )
        now = dt.datetime.now(dt.UTC)
        since = now - dt.timedelta(seconds=self.window_s)
        stmt = (
            select(
                Station.name,
                func.count(Inspection.id),
                func.sum(case((Inspection.verdict == Verdict.FAIL, 1), else_=0)),
                func.avg(Inspection.latency_ms),
                func.max(Inspection.latency_ms),
                func.max(Inspection.captured_at),
            )
            .join(Station, Station.id == Inspection.station_id)
            .where(Inspection.captured_at >= since)
            .group_by(Station.name)
        )
        try:
            with self.ctx.read_sessions() as session:
                rows = session.execute(stmt).all()
        except (DBAPIError, PoolTimeoutError) as exc:
            log.warning("metrics: database unavailable: %s", str(exc).splitlines()[0])
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for name, n, fails, mean_ms, max_ms, newest in rows:
            n = int(n or 0)
            rate.add_metric([name], n / self.window_s)
            anomaly.add_metric([name], int(fails or 0) / n if n else 0.0)
            latency.add_metric([name, "mean"], float(mean_ms or 0.0))
            latency.add_metric([name, "max"], float(max_ms or 0.0))
            if newest is not None:
                if newest.tzinfo is None:
                    newest = newest.replace(tzinfo=dt.UTC)
                age.add_metric([name], max(0.0, (now - newest).total_seconds()))
        yield from (up, rate, anomaly, latency, age)


def install_metrics(app: FastAPI, ctx: AppContext) -> CollectorRegistry:
    """Add the request middleware and ``GET /metrics`` to ``app``; return its registry."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoredResultsCollector(ctx))
    app.add_middleware(RequestMetrics, registry=registry)

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        """Prometheus text exposition of this app's registry (bearer token, see module doc)."""
        settings = ctx.settings
        if settings.metrics_token is not None:
            expected = f"Bearer {settings.metrics_token.get_secret_value()}".encode()
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(expected, given):
                return JSONResponse(
                    {"detail": "metrics need Authorization: Bearer <INSPECTION_API_METRICS_TOKEN>"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        elif not settings.metrics_public:
            return JSONResponse(
                {
                    "detail": "metrics are off: set INSPECTION_API_METRICS_TOKEN (or "
                    "INSPECTION_API_METRICS_PUBLIC=true on an internal-only port)"
                },
                status_code=404,
            )
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.state.metrics_registry = registry
    return registry


__all__ = ["RequestMetrics", "StoredResultsCollector", "WINDOW_S", "install_metrics"]
