"""Lines, stations, cameras, per-station thresholds and defect types.

Conventions of every data-access module: :mod:`inspection.db`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from inspection.db.common import Actor, audit, get_existing
from inspection.db.models import (
    Camera,
    DefectType,
    Line,
    Station,
    StationDefectKey,
    utcnow,
)
from inspection.errors import InvalidStateError, NotFoundError

# -- lines, stations, cameras, users, defect types ---------------------------------------------


def upsert_line(session: Session, *, name: str, description: str | None = None) -> Line:
    """The line called ``name``, created if missing; ``description`` updated when given."""
    line = session.scalar(select(Line).where(Line.name == name))
    if line is None:
        line = Line(name=name, description=description, created_at=utcnow())
        session.add(line)
        session.flush()
    elif description is not None:
        line.description = description
    return line


def upsert_station(
    session: Session,
    *,
    name: str,
    line_name: str,
    description: str | None = None,
    image_threshold: float | None = None,
    pixel_threshold: float | None = None,
    retention_days: int | None = None,
) -> Station:
    """The station called ``name`` on line ``line_name`` (both created if missing).

    Thresholds are only applied when the station is created: afterwards they belong to the
    operators (:func:`set_station_thresholds`, audited), so redeploying a station config does
    not silently undo their tuning. ``description`` and ``retention_days`` update when given.
    """
    line = upsert_line(session, name=line_name)
    station = session.scalar(select(Station).where(Station.name == name))
    if station is None:
        station = Station(
            name=name,
            line_id=line.id,
            description=description,
            image_threshold=image_threshold,
            pixel_threshold=pixel_threshold,
            thresholds_updated_at=(
                utcnow() if image_threshold is not None or pixel_threshold is not None else None
            ),
            retention_days=retention_days,
            created_at=utcnow(),
        )
        session.add(station)
        session.flush()
        # a new station starts with keys for the first nine types the plant knows
        for type_id in session.scalars(select(DefectType.id).order_by(DefectType.id).limit(9)):
            assign_defect_key(session, station_id=station.id, defect_type_id=type_id)
        return station
    station.line_id = line.id
    if description is not None:
        station.description = description
    if retention_days is not None:
        station.retention_days = retention_days
    return station


def get_station(session: Session, station_id: int) -> Station:
    """The station with id ``station_id``."""
    return get_existing(session, Station, station_id, "station")


def get_station_by_name(session: Session, name: str) -> Station:
    """The station called ``name``."""
    station = session.scalar(select(Station).where(Station.name == name))
    if station is None:
        raise NotFoundError(f"station {name!r} does not exist")
    return station


def upsert_camera(
    session: Session,
    *,
    station_id: int,
    name: str,
    serial: str | None = None,
    width_px: int | None = None,
    height_px: int | None = None,
    settings: Mapping[str, Any] | None = None,
) -> Camera:
    """The camera ``name`` of a station, created or updated with the given fields."""
    get_station(session, station_id)
    camera = session.scalar(
        select(Camera).where(Camera.station_id == station_id, Camera.name == name)
    )
    if camera is None:
        camera = Camera(station_id=station_id, name=name, settings={}, created_at=utcnow())
        session.add(camera)
    if serial is not None:
        camera.serial = serial
    if width_px is not None:
        camera.width_px = width_px
    if height_px is not None:
        camera.height_px = height_px
    if settings is not None:
        camera.settings = dict(settings)
    session.flush()
    return camera


def set_station_thresholds(
    session: Session,
    *,
    station_id: int,
    image_threshold: float | None,
    pixel_threshold: float | None,
    changed_by: int | str | Actor | None,
) -> Station:
    """Change a station's thresholds (no retraining needed) and audit the change.

    ``changed_by``: the user id of the operator/engineer, or a system actor name.
    """
    station = get_station(session, station_id)
    before = {
        "image_threshold": station.image_threshold,
        "pixel_threshold": station.pixel_threshold,
    }
    after = {"image_threshold": image_threshold, "pixel_threshold": pixel_threshold}
    station.image_threshold = image_threshold
    station.pixel_threshold = pixel_threshold
    station.thresholds_updated_at = utcnow()
    audit(
        session, "station.set_thresholds", station.id, actor=changed_by, before=before, after=after
    )
    session.flush()
    return station


def record_config_thresholds(
    session: Session,
    *,
    station_id: int,
    image_threshold: float | None,
    pixel_threshold: float | None,
) -> Station:
    """Store the thresholds of the station's own configuration file (what it applies while the
    operators have set none); not audited: the file is the authority and this only mirrors it."""
    station = get_station(session, station_id)
    station.config_image_threshold = image_threshold
    station.config_pixel_threshold = pixel_threshold
    session.flush()
    return station


def get_or_create_defect_type(session: Session, name: str) -> DefectType:
    """The defect type ``name`` (stripped, lower-cased), created when new (with no labelling
    key yet: :func:`assign_defect_key` gives it one at a station).

    Safe against two writers creating the same new type at once (savepoint + re-read).
    """
    clean = name.strip().lower()
    if not clean:
        raise ValueError("defect type name must not be empty")
    found = session.scalar(select(DefectType).where(DefectType.name == clean))
    if found is not None:
        return found
    try:
        with session.begin_nested():
            created = DefectType(name=clean, created_at=utcnow())
            session.add(created)
            session.flush()
        return created
    except IntegrityError:
        found = session.scalar(select(DefectType).where(DefectType.name == clean))
        if found is None:
            raise
        return found


def assign_defect_key(session: Session, *, station_id: int, defect_type_id: int) -> int | None:
    """The type's labelling key at the station: the one it has, else the lowest free key 1-9
    there (stored; it never moves afterwards), else None (all nine taken).

    Safe against two writers keying the same station at once (savepoint, then another try).
    """
    for _ in range(3):
        held = session.get(StationDefectKey, (station_id, defect_type_id))
        if held is not None:
            return held.key
        used = set(
            session.scalars(
                select(StationDefectKey.key).where(StationDefectKey.station_id == station_id)
            )
        )
        key = next((k for k in range(1, 10) if k not in used), None)
        if key is None:
            return None
        try:
            with session.begin_nested():
                session.add(
                    StationDefectKey(station_id=station_id, defect_type_id=defect_type_id, key=key)
                )
                session.flush()
            return key
        except IntegrityError:
            continue  # another writer took that key (or keyed this type) meanwhile
    raise InvalidStateError(f"the labelling keys of station {station_id} kept changing; try again")


def defect_keys(session: Session) -> dict[int, dict[int, int]]:
    """Every labelling key: ``{defect_type_id: {station_id: key}}``."""
    keys: dict[int, dict[int, int]] = {}
    for row in session.scalars(select(StationDefectKey)):
        keys.setdefault(row.defect_type_id, {})[row.station_id] = row.key
    return keys


def list_defect_types(session: Session) -> list[DefectType]:
    """All defect types, by name."""
    return list(session.scalars(select(DefectType).order_by(DefectType.name)))
