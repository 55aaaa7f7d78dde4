"""Promote and roll back model versions: the one place that decides which model a station runs.

The review UI's buttons, the REST API and the closed-loop retraining job all call these two
functions. Both only change statuses through :func:`inspection.db.repo.set_model_status` (which
keeps at most one active version per station and audits each status change) and add one
audit-log row describing the intent (``model_version.promote`` / ``station.rollback``). Neither
commits: the caller owns the transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from inspection.db import repo
from inspection.db.models import Inspection, ModelStatus, ModelVersion, Verdict
from inspection.errors import InvalidStateError, NotFoundError
from inspection.services.uow import committed

log = logging.getLogger(__name__)

Actor = int | str | repo.Actor | None


def _activate(
    session: Session,
    version: ModelVersion,
    actor: Actor,
    intent: tuple[str, int],
    *,
    before: dict[str, Any],
    after: dict[str, Any],
) -> None:
    """Make ``version`` active (the repo retires the station's previous one and audits the
    status changes) and audit the intent: ``(action, entity id)`` (see :func:`repo.audit`)."""
    repo.set_model_status(
        session, model_version_id=version.id, status=ModelStatus.ACTIVE, changed_by=actor
    )
    action, entity_id = intent
    repo.audit(session, action, entity_id, actor=actor, before=before, after=after)


def promote_model(session: Session, *, model_version_id: int, actor: Actor) -> ModelVersion:
    """Make a candidate (or retired) version the active model of its station.

    The station's previously active version is retired in the same transaction.

    Raises:
        NotFoundError: no such model version.
        InvalidStateError: the version is already active or belongs to no station.
    """
    version = session.get(ModelVersion, model_version_id)
    if version is None:
        raise NotFoundError(f"model version {model_version_id} does not exist")
    if version.status == ModelStatus.ACTIVE:
        raise InvalidStateError(f"model version {version.id} ({version.name}) is already active")
    if version.station_id is None:
        raise InvalidStateError(
            f"model version {version.id} ({version.name}) belongs to no station and cannot be "
            "promoted"
        )
    previous = repo.get_active_model(session, version.station_id)
    previous_id = previous.id if previous is not None else None
    _activate(
        session,
        version,
        actor,
        ("model_version.promote", version.id),
        before={"active_model_version_id": previous_id},
        after={"active_model_version_id": version.id, "station_id": version.station_id},
    )
    log.info(
        "station %s: model version %s promoted (was %s)",
        version.station_id,
        version.id,
        previous_id,
    )
    return version


def rollback_candidates(session: Session, *, station_id: int) -> list[ModelVersion]:
    """Retired versions of the station that were active before, most recently active first."""
    return list(
        session.scalars(
            select(ModelVersion)
            .where(
                ModelVersion.station_id == station_id,
                ModelVersion.status == ModelStatus.RETIRED,
                ModelVersion.activated_at.is_not(None),
            )
            .order_by(ModelVersion.activated_at.desc(), ModelVersion.id.desc())
        )
    )


def rollback_model(
    session: Session, *, station_id: int, actor: Actor, to_version_id: int | None = None
) -> ModelVersion:
    """Reactivate an earlier model of the station (default: the one active before this one).

    Raises:
        NotFoundError: the station or ``to_version_id`` does not exist.
        InvalidStateError: nothing to roll back to, or ``to_version_id`` belongs to another
            station or was never active.
    """
    repo.get_station(session, station_id)
    current = repo.get_active_model(session, station_id)
    if to_version_id is None:
        candidates = [
            v for v in rollback_candidates(session, station_id=station_id) if v is not current
        ]
        if not candidates:
            raise InvalidStateError(
                f"station {station_id} has no earlier active model version to roll back to"
            )
        target = candidates[0]
    else:
        found = session.get(ModelVersion, to_version_id)
        if found is None:
            raise NotFoundError(f"model version {to_version_id} does not exist")
        target = found
        if target.station_id != station_id:
            raise InvalidStateError(
                f"model version {target.id} belongs to station {target.station_id}, "
                f"not {station_id}"
            )
        if target.status == ModelStatus.ACTIVE:
            raise InvalidStateError(f"model version {target.id} is already active")
        if target.status != ModelStatus.RETIRED or target.activated_at is None:
            raise InvalidStateError(
                f"model version {target.id} was never active; promote it instead of rolling back"
            )
    _activate(
        session,
        target,
        actor,
        ("station.rollback", station_id),
        before={"active_model_version_id": current.id if current is not None else None},
        after={"active_model_version_id": target.id},
    )
    log.info(
        "station %s: rolled back to model version %s (was %s)",
        station_id,
        target.id,
        current.id if current is not None else None,
    )
    return target


#: :func:`promote_model` and :func:`rollback_model` as use cases (each committed).
promote = committed(promote_model)
rollback = committed(rollback_model)


# -- reading model versions ----------------------------------------------------------------


def model_versions(session: Session, *, station_id: int | None = None) -> list[ModelVersion]:
    """Model versions newest first (see :func:`repo.list_model_versions`)."""
    return repo.list_model_versions(session, station_id=station_id)


def get_model_version(session: Session, model_version_id: int) -> ModelVersion:
    """One model version.

    Raises:
        NotFoundError: no such version.
    """
    version = session.get(ModelVersion, model_version_id)
    if version is None:
        raise NotFoundError(f"model version {model_version_id} does not exist")
    return version


def model_inspection_stats(
    session: Session, model_version_ids: Sequence[int]
) -> dict[int, dict[str, float | int | None]]:
    """Per model version: inspections scored, fail rate and mean latency (production numbers
    beside the offline metrics)."""
    if not model_version_ids:
        return {}
    rows = session.execute(
        select(
            Inspection.model_version_id,
            func.count(),
            func.sum(case((Inspection.verdict == Verdict.FAIL, 1), else_=0)),
            func.avg(Inspection.latency_ms),
        )
        .where(Inspection.model_version_id.in_(list(model_version_ids)))
        .group_by(Inspection.model_version_id)
    ).tuples()
    stats: dict[int, dict[str, float | int | None]] = {}
    for version_id, n, fails, latency in rows:
        if version_id is None:
            continue
        stats[version_id] = {
            "inspections": int(n),
            "fail_rate": float(fails or 0) / int(n) if n else None,
            "mean_latency_ms": float(latency) if latency is not None else None,
        }
    return stats
