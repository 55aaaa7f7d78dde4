"""Running stations: one station file, or every station of a line in one process (threads).

:func:`run_line` is the programmatic entry point (``inspection station run-line`` and the demo
use it): open the database (optionally migrating it), train first models for stations that
ask for it (in a subprocess), start each station as soon as it has a model (the others train
on), wait, stop them gracefully and return each station's stats.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from inspection.db.engine import check_schema_at_head, make_engine, make_session_factory
from inspection.db.settings import get_settings, mask_url
from inspection.station.config import StationConfig, load_line, load_station_config
from inspection.station.pipeline import Station, wait_until_done

logger = logging.getLogger(__name__)


def open_database(db_url: str | None, *, init_db: bool = False) -> tuple[Engine, str]:
    """An engine on ``db_url`` (default ``INSPECTION_DATABASE_URL``) with the schema at head.

    ``init_db`` runs the migrations first (``inspection db upgrade``).

    Raises:
        SchemaOutOfDateError: the schema is not at head and ``init_db`` is false.
    """
    url = db_url or get_settings().database_url
    engine = make_engine(url)
    if init_db:
        from inspection.db import migrate

        migrate.upgrade(engine)
    check_schema_at_head(engine)
    logger.info("database %s", mask_url(url))
    return engine, url


def prepare_models(
    configs: Sequence[StationConfig],
    session_factory: sessionmaker[Session],
    db_url: str,
    on_ready: Callable[[StationConfig], None] | None = None,
) -> list[dict[str, Any]]:
    """Train first models (``detector.bootstrap``) for stations without one, in one subprocess.

    ``on_ready`` is called with each station's config as soon as its model is registered
    (while the next one trains), and at once for stations that need no training.

    Raises:
        MissingExtraError: a station needs a first model and this install has no ``train``
            extra (the lean station install trains nothing).
    """
    from inspection.extras import require_extra
    from inspection.station.bootstrap import needs_bootstrap, run_bootstraps_subprocess

    todo = [c for c in configs if needs_bootstrap(c, session_factory)]
    names = ", ".join(c.id for c in todo)
    if todo:
        require_extra(
            f"station {names} has no model yet; training its first one "
            "(detector.bootstrap; or point detector.path at an exported bundle)"
        )
    by_id = {c.id: c for c in todo}
    if on_ready is not None:
        for config in configs:
            if config.id not in by_id:
                on_ready(config)
    if not todo:
        return []
    logger.info("station %s has no model yet: training (bootstrap, one process)", names)
    ready = None if on_ready is None else lambda result: on_ready(by_id[result["station"]])
    return run_bootstraps_subprocess(todo, db_url, on_ready=ready)


def run_stations(
    configs: Sequence[StationConfig],
    *,
    db_url: str | None = None,
    init_db: bool = False,
    max_frames: int | None = None,
    duration_s: float | None = None,
    stop: threading.Event | None = None,
    bootstrap: bool = True,
) -> dict[str, dict[str, Any]]:
    """Run stations together until each camera ends / ``max_frames`` (per station) /
    ``duration_s`` / ``stop``; return ``{station id: stats}`` (see :meth:`Station.stats`)."""
    engine, url = open_database(db_url, init_db=init_db)
    factory = make_session_factory(engine)
    stations: list[Station] = []

    def start(config: StationConfig) -> None:
        station = Station(config, session_factory=factory)
        stations.append(station)
        station.start(max_frames=max_frames)

    try:
        if bootstrap:  # each station starts as soon as it has a model, the others still train
            prepare_models(configs, factory, url, on_ready=start)
        else:
            for config in configs:
                start(config)
        wait_until_done(stations, duration_s=duration_s, stop=stop)
    finally:
        results = {s.config.id: s.stop() for s in stations}
        engine.dispose()
    return results


def run_station_file(path: str | Path, **kwargs: Any) -> dict[str, Any]:
    """Run the station of one YAML file; keyword arguments as :func:`run_stations`."""
    config = load_station_config(path)
    return run_stations([config], **kwargs)[config.id]


def run_line(
    line_dir: str | Path = "stations/example-line", **kwargs: Any
) -> dict[str, dict[str, Any]]:
    """Run every station of a line folder in this process; keyword arguments as
    :func:`run_stations` (``db_url``, ``init_db``, ``max_frames``, ``duration_s``, ``stop``)."""
    return run_stations(load_line(line_dir), **kwargs)
