"""Model versions: registration, status changes (promote, retire, roll back), lookups.

Conventions of every data-access module: :mod:`inspection.db`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from inspection.db.common import Actor, add_audited, audit, get_existing
from inspection.db.models import (
    ModelStatus,
    ModelVersion,
    utcnow,
)
from inspection.db.plant import get_station
from inspection.errors import InvalidStateError

_MODEL_TRANSITIONS: dict[ModelStatus, frozenset[ModelStatus]] = {
    ModelStatus.CANDIDATE: frozenset({ModelStatus.ACTIVE, ModelStatus.RETIRED}),
    ModelStatus.ACTIVE: frozenset({ModelStatus.RETIRED}),
    # Rolling back to a retired version is allowed.
    ModelStatus.RETIRED: frozenset({ModelStatus.ACTIVE}),
}


# -- model versions ----------------------------------------------------------------------------


def register_model_version(
    session: Session,
    *,
    station_id: int | None,
    name: str,
    detector_type: str,
    artifact_path: str,
    config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    parent_id: int | None = None,
    training_job_id: int | None = None,
    registered_by: int | str | Actor | None = None,
) -> ModelVersion:
    """Record a trained model as a ``candidate`` (activate it with :func:`set_model_status`)."""
    if station_id is not None:
        get_station(session, station_id)
    version = ModelVersion(
        station_id=station_id,
        name=name,
        detector_type=detector_type,
        artifact_path=artifact_path,
        config=dict(config or {}),
        metrics=dict(metrics or {}),
        status=ModelStatus.CANDIDATE,
        parent_id=parent_id,
        training_job_id=training_job_id,
        created_at=utcnow(),
    )
    return add_audited(
        session,
        version,
        "model_version.register",
        actor=registered_by,
        after={"name": name, "detector_type": detector_type, "station_id": station_id},
    )


def set_model_status(
    session: Session,
    *,
    model_version_id: int,
    status: ModelStatus | str,
    changed_by: int | str | Actor | None = None,
) -> ModelVersion:
    """Move a model version through candidate -> active -> retired (audited).

    Activating a version retires the station's currently active one in the same transaction,
    so a station always has at most one active model.
    """
    version = get_existing(session, ModelVersion, model_version_id, "model version")
    target = ModelStatus(status)
    if version.status == target:
        return version
    if target not in _MODEL_TRANSITIONS[version.status]:
        raise InvalidStateError(
            f"model version {version.id} is {version.status.value}; cannot become {target.value}"
        )
    now = utcnow()
    if target == ModelStatus.ACTIVE:
        if version.station_id is None:
            raise InvalidStateError(
                f"model version {version.id} belongs to no station and cannot be active"
            )
        previous = get_active_model(session, version.station_id)
        if previous is not None:
            set_model_status(
                session,
                model_version_id=previous.id,
                status=ModelStatus.RETIRED,
                changed_by=changed_by,
            )
            session.flush()  # the one-active-per-station index must see the retirement first
        version.activated_at = now
    elif target == ModelStatus.RETIRED:
        version.retired_at = now
    before = {"status": version.status.value}
    version.status = target
    audit(
        session,
        "model_version.set_status",
        version.id,
        actor=changed_by,
        before=before,
        after={"status": target.value},
    )
    session.flush()
    return version


def get_active_model(session: Session, station_id: int) -> ModelVersion | None:
    """The station's active model version, or None when it has none yet."""
    return session.scalar(
        select(ModelVersion).where(
            ModelVersion.station_id == station_id, ModelVersion.status == ModelStatus.ACTIVE
        )
    )


def list_model_versions(session: Session, *, station_id: int | None = None) -> list[ModelVersion]:
    """Model versions, newest first, optionally of one station."""
    stmt = select(ModelVersion).order_by(ModelVersion.id.desc())
    if station_id is not None:
        stmt = stmt.where(ModelVersion.station_id == station_id)
    return list(session.scalars(stmt))
