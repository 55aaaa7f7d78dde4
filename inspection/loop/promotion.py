"""Promotion and one-click rollback for the loop, by station name.

The decisions themselves live in :mod:`inspection.services.models` (shared with the review UI
and the REST API: status changes through :func:`inspection.db.repo.set_model_status`, one
audit-log row per intent); this module adds the station-name lookup and the transaction, so the
CLI and the retraining job call one function each. Stations in database mode hot-reload the new
active version by polling (``pipeline.reload_poll_s``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from inspection.db import repo
from inspection.db.engine import run_in_transaction
from inspection.db.models import ModelVersion, Station
from inspection.services.models import promote_model, rollback_model

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelChange:
    """Which version a station runs after a promotion or rollback, and which it ran before."""

    station: str
    station_id: int
    active_version_id: int
    previous_version_id: int | None
    artifact_path: str


def _change(station: Station, previous: ModelVersion | None, active: ModelVersion) -> ModelChange:
    return ModelChange(
        station.name,
        station.id,
        active.id,
        previous.id if previous is not None else None,
        active.artifact_path,
    )


def promote(
    session_factory: sessionmaker[Session], *, model_version_id: int, actor: str | int | None
) -> ModelChange:
    """Make ``model_version_id`` its station's active model (the old one is retired)."""

    def tx(session: Session) -> ModelChange:
        version = session.get(ModelVersion, model_version_id)
        station_id = version.station_id if version is not None else None
        previous = repo.get_active_model(session, station_id) if station_id is not None else None
        promoted = promote_model(session, model_version_id=model_version_id, actor=actor)
        assert promoted.station_id is not None
        return _change(repo.get_station(session, promoted.station_id), previous, promoted)

    return run_in_transaction(session_factory, tx, what=f"promote model {model_version_id}")


def rollback(
    session_factory: sessionmaker[Session],
    *,
    station: str,
    actor: str | int | None,
    to_version_id: int | None = None,
) -> ModelChange:
    """Reactivate the station's previously active model (or ``to_version_id``).

    Raises:
        NotFoundError: no such station or version.
        InvalidStateError: nothing to roll back to (see :func:`rollback_model`).
    """

    def tx(session: Session) -> ModelChange:
        row = repo.get_station_by_name(session, station)
        previous = repo.get_active_model(session, row.id)
        target = rollback_model(
            session, station_id=row.id, actor=actor, to_version_id=to_version_id
        )
        return _change(row, previous, target)

    change = run_in_transaction(session_factory, tx, what=f"roll back station {station}")
    logger.info(
        "station %s rolled back to model version %s (was %s)",
        station,
        change.active_version_id,
        change.previous_version_id,
    )
    return change
