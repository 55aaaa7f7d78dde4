"""``inspection bench ui``: latency of the review pages and their API with 100k inspections.

A SQLite database (WAL, the embedded default) is built by the Alembic migrations and filled
with bulk inserts: ``n_inspections`` inspections over the last 30 days on four stations, 30 %
of them defective with 1-3 regions (3 % of those of unknown type), a frame and a heatmap
artifact each (synthetic renders from :mod:`inspection.api.seed`'s pool, content-addressed), and
operator labels on 10 %. The review app then runs as a separate process (``inspection serve``,
uvicorn, one worker) and one client measures sequential requests, like an operator clicking:

* the review queue page ``/review`` (first page, and filtered by station and score) and its
  API ``/api/review-queue`` (first page, next keyset page, filtered by type, the count);
* the inspection detail page ``/inspections/{id}`` and ``/api/inspections/{id}`` for random ids;
* for reference (no target): the overlay PNG, the line overview and the charts page.

p50/p95/p99 are wall-clock milliseconds at the client, including HTTP on localhost. The
acceptance target is p95 <= 300 ms for the queue and detail pages and their endpoints.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from inspection.bench.measure import end_process
from inspection.bench.report import markdown_table, stamp, write_results
from inspection.db import migrate
from inspection.db.engine import make_engine, make_session_factory
from inspection.db.models import (
    Artifact,
    DefectRegion,
    DefectType,
    Inspection,
    OperatorLabel,
    User,
    Verdict,
    utcnow,
)
from inspection.errors import InspectionError

log = logging.getLogger(__name__)

NAME = "ui"
TARGET_P95_MS = 300.0
COLUMNS = ["target", "kind", "n", "p50_ms", "p95_ms", "p99_ms", "max_ms", "meets_target"]
STATIONS = (("press-a", "disc"), ("glaze-b", "tile"), ("aoi-c", "pcb"), ("press-d", "disc"))
ACCOUNT = ("bench-operator", "bench-operator-pw")


class BenchError(InspectionError):
    """The UI benchmark could not run (server did not start, a request failed)."""


@dataclass(frozen=True)
class UiBenchConfig:
    """Sizes of one run."""

    n_inspections: int = 100_000
    n_requests: int = 200
    n_reference_requests: int = 30
    batch_size: int = 5_000
    label_fraction: float = 0.10
    seed: int = 0


# -- seeding -------------------------------------------------------------------------------


def _setup_stations(session: Session, store_root: Path) -> list[dict[str, Any]]:
    """Stations, model versions, the operator account and a pool of stored frames each."""
    from inspection.api.seed import ensure_defect_types, ensure_station, render_pool
    from inspection.db.models import Role
    from inspection.services.users import create_user
    from inspection.storage import LocalArtifactStore

    store = LocalArtifactStore(store_root)
    ensure_defect_types(session)
    create_user(session, username=ACCOUNT[0], role=Role.OPERATOR, password=ACCOUNT[1])
    stations = []
    for index, (name, family) in enumerate(STATIONS):
        station, model_id = ensure_station(session, name, family=family, metrics_seed=index)
        pool = render_pool(store, family, n_normal=10, n_defect=10, seed=index)
        stations.append({"id": station.id, "model_id": model_id, "pool": pool})
    return stations


def _artifact_row(data: Any, inspection_id: int, created_at: dt.datetime) -> dict[str, Any]:
    """An ``artifact`` row for a pool frame or heatmap stored once and shared by inspections."""
    return {
        "inspection_id": inspection_id,
        "region_id": None,
        "kind": data.kind,
        "store_key": data.store_key,
        "sha256": data.sha256,
        "size_bytes": data.size_bytes,
        "media_type": data.media_type,
        "width_px": data.width_px,
        "height_px": data.height_px,
        "heatmap_max": data.heatmap_max,
        "heatmap_mean": data.heatmap_mean,
        "created_at": created_at,
    }


def seed_bulk(engine: Engine, store_root: Path, config: UiBenchConfig) -> dict[str, float]:
    """Fill the database with ``config.n_inspections`` inspections by bulk inserts."""
    factory = make_session_factory(engine)
    started = time.perf_counter()
    with factory() as session, session.begin():
        stations = _setup_stations(session, store_root)
        type_ids = {t.name: t.id for t in session.scalars(select(DefectType))}
        operator_id = session.scalar(select(User.id).where(User.username == ACCOUNT[0]))
    rng = random.Random(config.seed)
    now = utcnow()
    span_s = 30 * 86_400
    names = sorted(type_ids)
    next_id = 1
    n_regions = 0
    with engine.begin() as conn:
        for start in range(0, config.n_inspections, config.batch_size):
            inspections: list[dict[str, Any]] = []
            regions: list[dict[str, Any]] = []
            artifacts: list[dict[str, Any]] = []
            labels: list[dict[str, Any]] = []
            for i in range(start, min(config.n_inspections, start + config.batch_size)):
                station = stations[i % len(stations)]
                defect = rng.random() < 0.3
                candidates = [p for p in station["pool"] if (p.defect_type is not None) == defect]
                part = rng.choice(candidates)
                score = rng.uniform(0.5, 1.0) if defect else rng.uniform(0.0, 0.5)
                unknown = False
                if defect:
                    for x, y, w, h, area, peak in part.regions[: rng.randint(1, 3)]:
                        is_unknown = rng.random() < 0.03
                        unknown = unknown or is_unknown
                        regions.append(
                            {
                                "inspection_id": next_id,
                                "x": x,
                                "y": y,
                                "w": w,
                                "h": h,
                                "area_px": area,
                                "score": peak,
                                "defect_type_id": None
                                if is_unknown
                                else type_ids.get(part.defect_type or "", type_ids[names[0]]),
                                "confidence": rng.random(),
                                "is_unknown": is_unknown,
                            }
                        )
                captured = now - dt.timedelta(seconds=span_s * (1 - i / config.n_inspections))
                inspections.append(
                    {
                        "id": next_id,
                        "station_id": station["id"],
                        "captured_at": captured,
                        "frame_ref": part.frame.store_key,
                        "idempotency_key": f"bench-{i}",
                        "model_version_id": station["model_id"],
                        "raw_score": score * 3.0,
                        "norm_score": score,
                        "verdict": Verdict.FAIL if score >= 0.5 else Verdict.PASS,
                        "latency_ms": rng.uniform(8, 30),
                        "has_unknown": unknown,
                        "created_at": captured,
                    }
                )
                artifacts += [
                    _artifact_row(d, next_id, captured) for d in (part.frame, part.heatmap)
                ]
                if rng.random() < config.label_fraction:
                    labels.append(
                        {
                            "inspection_id": next_id,
                            "user_id": operator_id,
                            "verdict": Verdict.FAIL if defect else Verdict.PASS,
                            "defect_type_id": type_ids.get(part.defect_type or "")
                            if defect
                            else None,
                            "note": None,
                            "created_at": captured,
                        }
                    )
                next_id += 1
            conn.execute(insert(Inspection), inspections)
            if regions:
                conn.execute(insert(DefectRegion), regions)
            conn.execute(insert(Artifact), artifacts)
            if labels:
                conn.execute(insert(OperatorLabel), labels)
            n_regions += len(regions)
    return {"seed_s": time.perf_counter() - started, "regions": float(n_regions)}


# -- server --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve_subprocess(db_url: str, artifacts: Path, log_file: Path) -> Iterator[str]:
    """Run ``inspection serve`` in its own process; yield its base URL; stop it afterwards."""
    port = _free_port()
    env = {
        **os.environ,
        "INSPECTION_API_ARTIFACT_ROOT": str(artifacts),
        "INSPECTION_API_SECRET_KEY": "bench-" + os.urandom(16).hex(),
    }
    command = [
        sys.executable,
        "-c",
        "from inspection.cli import main; main()",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--db",
        db_url,
    ]
    with log_file.open("w") as log_out:
        process = subprocess.Popen(command, env=env, stdout=log_out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise BenchError(f"server exited: {log_file.read_text()[-2000:]}")
                try:
                    if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise BenchError("server did not answer /api/health within 60 s")
                time.sleep(0.2)
            yield url
        finally:
            end_process(process, 15)


def _browser_client(url: str) -> httpx.Client:
    """A client logged in through the login form (session cookie), like a browser."""
    client = httpx.Client(base_url=url, timeout=30, follow_redirects=False)
    page = client.get("/login")
    token = re.search(r'name="login_csrf" value="([^"]+)"', page.text)
    if token is None:
        raise BenchError("login page has no form token")
    response = client.post(
        "/login",
        data={"username": ACCOUNT[0], "password": ACCOUNT[1], "login_csrf": token.group(1)},
    )
    if response.status_code != 303:
        raise BenchError(f"login failed: {response.status_code}")
    return client


# -- measuring -----------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def measure(
    client: httpx.Client, urls: Callable[[int], str], n: int, warmup: int = 5
) -> list[float]:
    """Milliseconds of ``n`` sequential GETs of ``urls(i)`` after ``warmup`` unmeasured ones."""
    for i in range(warmup):
        client.get(urls(-1 - i))
    times = []
    for i in range(n):
        url = urls(i)
        started = time.perf_counter()
        response = client.get(url)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise BenchError(f"GET {url} -> {response.status_code}: {response.text[:300]}")
        times.append(elapsed)
    return times


def _row(name: str, kind: str, times: list[float], target: bool) -> dict[str, Any]:
    p95 = _percentile(times, 95)
    return {
        "target": name,
        "kind": kind,
        "n": len(times),
        "p50_ms": _percentile(times, 50),
        "p95_ms": p95,
        "p99_ms": _percentile(times, 99),
        "max_ms": max(times),
        "meets_target": (p95 <= TARGET_P95_MS) if target else None,
    }


#: One measured target: name, kind, client, URL of request i, request count, counts toward
#: the p95 target (False: for reference).
Target = tuple[str, str, httpx.Client, Callable[[int], str], int, bool]


def _next_page_urls(api: httpx.Client) -> Callable[[int], str]:
    """URLs of the review queue's following pages (walks up to 40 pages, then starts over)."""
    cursors: list[str] = []

    def next_page(i: int) -> str:
        if not cursors or len(cursors) > 40:
            cursors.clear()
            first = api.get("/api/review-queue?limit=50").json()
            cursors.append(first["next_cursor"])
        cursor = cursors[-1]
        page = api.get(f"/api/review-queue?limit=50&cursor={cursor}").json()
        cursors.append(page["next_cursor"])
        return f"/api/review-queue?limit=50&cursor={cursor}"

    return next_page


def _plan(
    config: UiBenchConfig, client: httpx.Client, api: httpx.Client, rng: random.Random
) -> list[Target]:
    """What is measured, in order: pages (browser session) and API (bearer token)."""
    n = config.n_inspections

    def random_id(_: int) -> int:
        return rng.randint(1, n)

    many, few = config.n_requests, config.n_reference_requests
    queue = "/api/review-queue"
    return [
        ("/review", "page", client, lambda i: "/review", many, True),
        (
            "/review?station_id&min_score",
            "page",
            client,
            lambda i: f"/review?station_id={1 + i % 4}&min_score=0.6",
            many,
            True,
        ),
        ("/inspections/{id}", "page", client, lambda i: f"/inspections/{random_id(i)}", many, True),
        (f"GET {queue}", "api", api, lambda i: f"{queue}?limit=50", many, True),
        (f"GET {queue} (next page)", "api", api, _next_page_urls(api), many, True),
        (
            f"GET {queue}?defect_type",
            "api",
            api,
            lambda i: f"{queue}?limit=50&defect_type=crack",
            many,
            True,
        ),
        (f"GET {queue}/count", "api", api, lambda i: f"{queue}/count", many, True),
        (
            "GET /api/inspections/{id}",
            "api",
            api,
            lambda i: f"/api/inspections/{random_id(i)}",
            many,
            True,
        ),
        (
            "GET /api/inspections/{id}/overlay.png",
            "image",
            api,
            lambda i: f"/api/inspections/{random_id(i)}/overlay.png",
            few,
            False,
        ),
        ("/ (line overview)", "page", client, lambda i: "/", few, False),
        ("/charts (7 days)", "page", client, lambda i: "/charts", few, False),
    ]


def _seed_database(root: Path, config: UiBenchConfig) -> tuple[str, Path, dict[str, float], float]:
    """A migrated, seeded SQLite database under ``root``: its URL, the artifact folder, the
    seeding figures and the database's size in MiB."""
    db_url = f"sqlite:///{root / 'ui.db'}"
    artifacts = root / "artifacts"
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        seeded = seed_bulk(engine, artifacts, config)
    finally:
        engine.dispose()
    log.info("seeded %d inspections in %.1f s", config.n_inspections, seeded["seed_s"])
    db_mib = sum(p.stat().st_size for p in root.glob("ui.db*")) / 2**20
    return db_url, artifacts, seeded, db_mib


def _measure_served(
    db_url: str, artifacts: Path, root: Path, config: UiBenchConfig, rng: random.Random
) -> list[dict[str, Any]]:
    """Serve the database in a subprocess and time every target of :func:`_plan`."""
    rows = []
    with serve_subprocess(db_url, artifacts, root / "server.log") as url:
        client = _browser_client(url)
        token = client.post(
            "/api/auth/token", json={"username": ACCOUNT[0], "password": ACCOUNT[1]}
        ).json()["access_token"]
        api = httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}"})
        for name, kind, http, urls, count, is_target in _plan(config, client, api, rng):
            times = measure(http, urls, count)
            rows.append(_row(name, kind, times, is_target))
            log.info("%s: p95 %.1f ms", name, rows[-1]["p95_ms"])
        api.close()
        client.close()
    return rows


def _report(
    config: UiBenchConfig, seeded: dict[str, float], db_mib: float, rows: list[dict[str, Any]]
) -> tuple[dict[str, Any], str]:
    """The results' JSON payload and markdown text (load average read now)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    targets = [r for r in rows if r["meets_target"] is not None]
    payload: dict[str, Any] = {
        **stamp(),
        "config": {
            "n_inspections": config.n_inspections,
            "n_regions": int(seeded["regions"]),
            "labelled_fraction": config.label_fraction,
            "n_requests": config.n_requests,
            "database": "SQLite (WAL) file, built by the Alembic migrations",
            "server": "inspection serve (uvicorn, 1 process) on 127.0.0.1, sequential client",
            "db_mib": round(db_mib, 1),
            "seed_s": round(seeded["seed_s"], 1),
            "load_average_1_5_15": [round(v, 2) for v in load],
        },
        "target_p95_ms": TARGET_P95_MS,
        "all_targets_met": all(r["meets_target"] for r in targets),
        "results": rows,
    }
    markdown = (
        f"{config.n_inspections:,} inspections ({int(seeded['regions']):,} regions, "
        f"{config.label_fraction:.0%} labelled) in SQLite ({db_mib:.0f} MiB); `inspection serve` "
        f"in its own process, one sequential client on localhost, {config.n_requests} requests "
        f"per target after 5 warm-up requests. Target: p95 <= {TARGET_P95_MS:.0f} ms for the "
        "review queue and detail pages and their API (the last three rows are for reference). "
        f"Load average during the run: {', '.join(f'{v:.2f}' for v in load)} "
        "(shared machine).\n\n" + markdown_table(rows, COLUMNS) + "\n"
    )
    return payload, markdown


def run(config: UiBenchConfig, results_dir: Path) -> dict[str, Any]:
    """Seed, serve, measure; write ``ui.json`` and ``ui.md``; return the payload."""
    rng = random.Random(config.seed + 1)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    with tempfile.TemporaryDirectory(prefix="inspection-ui-bench-") as tmp:
        root = Path(tmp)
        db_url, artifacts, seeded, db_mib = _seed_database(root, config)
        rows = _measure_served(db_url, artifacts, root, config, rng)
    payload, markdown = _report(config, seeded, db_mib, rows)
    write_results(NAME, payload, markdown, results_dir)
    return payload
