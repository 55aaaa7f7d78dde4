"""Data-access functions shared by stations, the API and jobs.

Every function takes an open :class:`~sqlalchemy.orm.Session` first and keyword arguments after
it; none commits (the caller owns the transaction, e.g. with
:func:`inspection.db.engine.run_in_transaction`), except where stated. Inputs with structure
(regions, artifacts) are frozen dataclasses, not dicts. Missing rows raise
:class:`~inspection.errors.NotFoundError`; illegal state changes raise
:class:`~inspection.errors.InvalidStateError`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, exists, func, insert, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from inspection.db.models import (
    Artifact,
    ArtifactKind,
    AuditLog,
    Base,
    Camera,
    DefectRegion,
    DefectType,
    Inspection,
    JobStatus,
    Line,
    ModelStatus,
    ModelVersion,
    OperatorLabel,
    RetrainJob,
    Role,
    Station,
    TrainingSetItem,
    User,
    Verdict,
    utcnow,
)
from inspection.errors import InvalidCursorError, InvalidStateError, NotFoundError
from inspection.storage import StoredObject

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Base)

#: Jobs in these states never change again.
FINAL_JOB_STATES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
_JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
}
_MODEL_TRANSITIONS: dict[ModelStatus, frozenset[ModelStatus]] = {
    ModelStatus.CANDIDATE: frozenset({ModelStatus.ACTIVE, ModelStatus.RETIRED}),
    ModelStatus.ACTIVE: frozenset({ModelStatus.RETIRED}),
    # Rolling back to a retired version is allowed.
    ModelStatus.RETIRED: frozenset({ModelStatus.ACTIVE}),
}
MAX_LOG_CHARS = 200_000
_IN_CHUNK = 500  # keys per IN (...) list
#: ArtifactData fields that are artifact columns as they are.
_ARTIFACT_COLUMNS = (
    "store_key",
    "sha256",
    "size_bytes",
    "media_type",
    "width_px",
    "height_px",
    "heatmap_max",
    "heatmap_mean",
)


# -- input containers --------------------------------------------------------------------------


@dataclass(frozen=True)
class RegionData:
    """A detected defect region to record.

    ``x, y, w, h``: bounding box in frame pixels; ``area_px``: anomalous pixel count;
    ``defect_type``: a type name (created when new) or None when untyped; ``is_unknown``: the
    open-set classifier rejected every known type.
    """

    x: int
    y: int
    w: int
    h: int
    area_px: float
    score: float | None = None
    defect_type: str | None = None
    confidence: float | None = None
    is_unknown: bool = False


@dataclass(frozen=True)
class ArtifactData:
    """A stored file to attach to an inspection (see :class:`inspection.storage.ArtifactStore`).

    ``region_index`` ties a crop to the region at that index of the same call's ``regions``.
    """

    kind: ArtifactKind
    store_key: str
    sha256: str
    size_bytes: int
    media_type: str | None = None
    width_px: int | None = None
    height_px: int | None = None
    heatmap_max: float | None = None
    heatmap_mean: float | None = None
    region_index: int | None = None

    @classmethod
    def from_stored(
        cls, stored: StoredObject, *, kind: ArtifactKind | str, **extra: Any
    ) -> ArtifactData:
        """Build from what :meth:`ArtifactStore.put_bytes` returned."""
        return cls(
            kind=ArtifactKind(kind),
            store_key=stored.key,
            sha256=stored.sha256,
            size_bytes=stored.size_bytes,
            **extra,
        )


@dataclass(frozen=True)
class ReviewPage:
    """One page of the review queue; pass ``next_cursor`` back to get the next page."""

    items: list[Inspection]
    next_cursor: str | None = None


@dataclass(frozen=True)
class Actor:
    """Who made a change, for the audit log: a user, or a named system component."""

    name: str
    user_id: int | None = None


# -- helpers -----------------------------------------------------------------------------------


def _get(session: Session, model: type[M], ident: int, what: str) -> M:
    obj = session.get(model, ident)
    if obj is None:
        raise NotFoundError(f"{what} {ident} does not exist")
    return obj


def _resolve_actor(session: Session, changed_by: int | str | Actor | None) -> Actor:
    """``changed_by``: a user id, a system actor name (``"station:s1"``), or an :class:`Actor`."""
    if changed_by is None:
        return Actor(name="system")
    if isinstance(changed_by, Actor):
        return changed_by
    if isinstance(changed_by, str):
        return Actor(name=changed_by)
    user = _get(session, User, changed_by, "user")
    return Actor(name=user.username, user_id=user.id)


def write_audit(
    session: Session,
    *,
    actor: int | str | Actor | None,
    action: str,
    entity_type: str,
    entity_id: int | str,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> AuditLog:
    """Append one audit-log row (``before``/``after`` must be JSON-serialisable)."""
    who = _resolve_actor(session, actor)
    row = AuditLog(
        at=utcnow(),
        user_id=who.user_id,
        actor=who.name,
        action=action,
        entity_type=entity_type,
        entity_id=str(entity_id),
        before=dict(before) if before is not None else None,
        after=dict(after) if after is not None else None,
    )
    session.add(row)
    return row


def _aware(value: dt.datetime, name: str) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value!r}")
    return value


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
        return station
    station.line_id = line.id
    if description is not None:
        station.description = description
    if retention_days is not None:
        station.retention_days = retention_days
    return station


def get_station(session: Session, station_id: int) -> Station:
    """The station with id ``station_id``."""
    return _get(session, Station, station_id, "station")


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
    write_audit(
        session,
        actor=changed_by,
        action="station.set_thresholds",
        entity_type="station",
        entity_id=station.id,
        before=before,
        after=after,
    )
    session.flush()
    return station


def create_user(
    session: Session,
    *,
    username: str,
    role: Role | str,
    password_hash: str | None = None,
    display_name: str | None = None,
    created_by: int | str | Actor | None = None,
) -> User:
    """Create a user (``password_hash`` from :func:`inspection.db.security.hash_password`)."""
    user = User(
        username=username,
        role=Role(role),
        password_hash=password_hash,
        display_name=display_name,
        is_active=True,
        created_at=utcnow(),
    )
    session.add(user)
    session.flush()
    write_audit(
        session,
        actor=created_by,
        action="user.create",
        entity_type="user",
        entity_id=user.id,
        after={"username": username, "role": user.role.value},
    )
    return user


def get_user_by_username(session: Session, username: str) -> User | None:
    """The user called ``username``, or None."""
    return session.scalar(select(User).where(User.username == username))


def get_or_create_defect_type(session: Session, name: str) -> DefectType:
    """The defect type ``name`` (stripped, lower-cased), created when new.

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


def list_defect_types(session: Session) -> list[DefectType]:
    """All defect types, by name."""
    return list(session.scalars(select(DefectType).order_by(DefectType.name)))


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
    session.add(version)
    session.flush()
    write_audit(
        session,
        actor=registered_by,
        action="model_version.register",
        entity_type="model_version",
        entity_id=version.id,
        after={"name": name, "detector_type": detector_type, "station_id": station_id},
    )
    return version


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
    version = _get(session, ModelVersion, model_version_id, "model version")
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
    write_audit(
        session,
        actor=changed_by,
        action="model_version.set_status",
        entity_type="model_version",
        entity_id=version.id,
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


# -- inspections -------------------------------------------------------------------------------


def _defect_type_ids(session: Session, names: Iterable[str | None]) -> dict[str, int]:
    wanted = {_type_key(n) for n in names if n is not None and n.strip()}
    if not wanted:
        return {}
    rows = session.execute(
        select(DefectType.name, DefectType.id).where(DefectType.name.in_(wanted))
    ).tuples()
    found = {name: ident for name, ident in rows}
    for name in wanted - found.keys():
        found[name] = get_or_create_defect_type(session, name).id
    return found


def _type_key(name: str) -> str:
    return name.strip().lower()


@dataclass(frozen=True)
class InspectionData:
    """One inspection to record (the fields of :func:`record_inspection`)."""

    station_id: int
    captured_at: dt.datetime
    frame_ref: str
    model_version_id: int | None
    raw_score: float
    norm_score: float
    verdict: Verdict | str
    latency_ms: float
    idempotency_key: str
    regions: Sequence[RegionData] = ()
    artifacts: Sequence[ArtifactData] = ()
    camera_id: int | None = None

    def validate(self) -> None:
        """Reject naive capture times, bad keys and dangling region indexes."""
        _aware(self.captured_at, "captured_at")
        if not self.idempotency_key or len(self.idempotency_key) > 64:
            raise ValueError("idempotency_key must be 1..64 characters")
        for artifact in self.artifacts:
            index = artifact.region_index
            if index is not None and not 0 <= index < len(self.regions):
                raise ValueError(f"artifact region_index {index} out of range")


def _build_inspection(data: InspectionData, type_ids: Mapping[str, int]) -> Inspection:
    now = utcnow()
    regions = [
        DefectRegion(
            x=r.x,
            y=r.y,
            w=r.w,
            h=r.h,
            area_px=float(r.area_px),
            score=r.score,
            defect_type_id=type_ids[_type_key(r.defect_type)]
            if r.defect_type is not None and r.defect_type.strip()
            else None,
            confidence=r.confidence,
            is_unknown=r.is_unknown,
        )
        for r in data.regions
    ]
    artifacts = [
        Artifact(
            region=regions[a.region_index] if a.region_index is not None else None,
            kind=ArtifactKind(a.kind),
            store_key=a.store_key,
            sha256=a.sha256,
            size_bytes=a.size_bytes,
            media_type=a.media_type,
            width_px=a.width_px,
            height_px=a.height_px,
            heatmap_max=a.heatmap_max,
            heatmap_mean=a.heatmap_mean,
            created_at=now,
        )
        for a in data.artifacts
    ]
    return Inspection(
        station_id=data.station_id,
        camera_id=data.camera_id,
        captured_at=data.captured_at,
        frame_ref=data.frame_ref,
        idempotency_key=data.idempotency_key,
        model_version_id=data.model_version_id,
        raw_score=float(data.raw_score),
        norm_score=float(data.norm_score),
        verdict=Verdict(data.verdict),
        latency_ms=float(data.latency_ms),
        has_unknown=any(r.is_unknown for r in data.regions),
        created_at=now,
        regions=regions,
        artifacts=artifacts,
    )


def record_inspection(
    session: Session,
    *,
    station_id: int,
    captured_at: dt.datetime,
    frame_ref: str,
    model_version_id: int | None,
    raw_score: float,
    norm_score: float,
    verdict: Verdict | str,
    latency_ms: float,
    idempotency_key: str,
    regions: Sequence[RegionData] = (),
    artifacts: Sequence[ArtifactData] = (),
    camera_id: int | None = None,
) -> Inspection:
    """Store one inspection with its regions and artifacts; idempotent on the key.

    If ``(station_id, idempotency_key)`` is already stored, the stored inspection is returned
    unchanged (replaying a station's spool is harmless), also when another writer inserts the
    same key concurrently. ``captured_at`` must be timezone-aware.
    """
    data = InspectionData(
        station_id=station_id,
        captured_at=captured_at,
        frame_ref=frame_ref,
        model_version_id=model_version_id,
        raw_score=raw_score,
        norm_score=norm_score,
        verdict=verdict,
        latency_ms=latency_ms,
        idempotency_key=idempotency_key,
        regions=regions,
        artifacts=artifacts,
        camera_id=camera_id,
    )
    return record_inspections(session, [data])[0]


def record_inspections(session: Session, items: Sequence[InspectionData]) -> list[Inspection]:
    """Store many inspections in one flush (spool replay, imports); idempotent per key.

    Returns one inspection per item, in order: the stored one for keys already present (or
    repeated within ``items``). All rows go in one savepoint; if a concurrent writer inserted
    one of the keys meanwhile, the items are retried one at a time.
    """
    for item in items:
        item.validate()
    existing = _existing_by_key(session, items)
    type_ids = _defect_type_ids(session, (r.defect_type for i in items for r in i.regions))
    result: dict[tuple[int, str], Inspection] = dict(existing)
    new: list[Inspection] = []
    for item in items:
        key = (item.station_id, item.idempotency_key)
        if key not in result:
            result[key] = _build_inspection(item, type_ids)
            new.append(result[key])
    if new:
        try:
            with session.begin_nested():
                session.add_all(new)
                session.flush()
        except IntegrityError:
            if len(items) == 1:
                item = items[0]
                found = _find_by_key(session, item.station_id, item.idempotency_key)
                if found is None:
                    raise
                log.info(
                    "inspection %s/%s was stored concurrently",
                    item.station_id,
                    item.idempotency_key,
                )
                return [found]
            return [record_inspections(session, [item])[0] for item in items]
    return [result[(item.station_id, item.idempotency_key)] for item in items]


def insert_inspections(session: Session, items: Sequence[InspectionData]) -> list[int]:
    """Store many inspections with bulk INSERTs; the inspection id per item, in order.

    The station's hot path: the same rows as :func:`record_inspections` (idempotent per
    ``(station_id, idempotency_key)``, regions, artifacts tied to their regions), written with
    one multi-row INSERT ... RETURNING per table instead of ORM objects. Optimistic: new keys
    (the station's normal case) cost no lookup; only when the unique key refuses the batch are
    the stored keys looked up and the rest inserted, and if a concurrent writer got in between,
    the items are retried one at a time. Keys already stored (or repeated within ``items``)
    return the stored id.
    """
    unique = _validated_by_key(items)
    ids: dict[tuple[int, str], int] = {}
    try:
        with session.begin_nested():
            ids.update(_bulk_insert(session, list(unique.values())))
    except IntegrityError:
        ids = _existing_ids(session, items)
        new = [item for key, item in unique.items() if key not in ids]
        try:
            if new:
                with session.begin_nested():
                    ids.update(_bulk_insert(session, new))
        except IntegrityError:
            if len(items) == 1:
                raise
            return [insert_inspections(session, [item])[0] for item in items]
    return [ids[(item.station_id, item.idempotency_key)] for item in items]


def insert_new_inspections(session: Session, items: Sequence[InspectionData]) -> None:
    """Store inspections whose keys are all new, in the fewest statements; no ids returned.

    The station's hot path under :func:`insert_inspections`: no savepoint, and rows without
    regions or artifacts (the passing parts) go in one plain multi-row INSERT without
    RETURNING. Run it in a transaction of its own: if a key is already stored it raises
    :class:`~sqlalchemy.exc.IntegrityError` and that transaction must be rolled back (then store
    the batch with :func:`insert_inspections`, which handles stored keys).
    """
    _bulk_insert(session, list(_validated_by_key(items).values()), need_ids=False)


def _validated_by_key(items: Sequence[InspectionData]) -> dict[tuple[int, str], InspectionData]:
    """``items`` validated, by (station id, key); a key repeated within them is kept once."""
    unique: dict[tuple[int, str], InspectionData] = {}
    for item in items:
        item.validate()
        unique.setdefault((item.station_id, item.idempotency_key), item)
    return unique


def _inspection_row(d: InspectionData, now: dt.datetime) -> dict[str, Any]:
    return {
        "station_id": d.station_id,
        "camera_id": d.camera_id,
        "captured_at": d.captured_at,
        "frame_ref": d.frame_ref,
        "idempotency_key": d.idempotency_key,
        "model_version_id": d.model_version_id,
        "raw_score": float(d.raw_score),
        "norm_score": float(d.norm_score),
        "verdict": Verdict(d.verdict),
        "latency_ms": float(d.latency_ms),
        "has_unknown": any(r.is_unknown for r in d.regions),
        "created_at": now,
    }


def _bulk_insert(
    session: Session, items: Sequence[InspectionData], *, need_ids: bool = True
) -> dict[tuple[int, str], int]:
    """INSERT ``items`` (distinct new keys) with their regions and artifacts; their ids.

    ``need_ids=False``: items without regions and artifacts are inserted without RETURNING
    and left out of the returned ids.
    """
    now = utcnow()
    table = Inspection.__table__
    if not need_ids:
        plain = [d for d in items if not d.regions and not d.artifacts]
        if plain:
            session.execute(insert(table), [_inspection_row(d, now) for d in plain])  # type: ignore[arg-type]
            items = [d for d in items if d.regions or d.artifacts]
            if not items:
                return {}
    type_ids = _defect_type_ids(session, (r.defect_type for i in items for r in i.regions))
    # RETURNING the unique key with the id, matched up here: asking SQLAlchemy to return rows
    # in parameter order instead makes it send one INSERT per row on SQLite (no sentinel).
    rows = session.execute(
        insert(table).returning(  # type: ignore[arg-type]
            table.c.id,
            table.c.station_id,
            table.c.idempotency_key,
        ),
        [_inspection_row(d, now) for d in items],
    )
    by_key = {(int(station), str(key)): int(ident) for ident, station, key in rows}
    inspection_ids = [by_key[(d.station_id, d.idempotency_key)] for d in items]
    owners: list[tuple[int, int]] = []  # (item position, region index) per region row
    region_rows: list[dict[str, Any]] = []
    for pos, (d, ident) in enumerate(zip(items, inspection_ids, strict=True)):
        for index, r in enumerate(d.regions):
            owners.append((pos, index))
            region_rows.append(
                {
                    "inspection_id": ident,
                    "x": r.x,
                    "y": r.y,
                    "w": r.w,
                    "h": r.h,
                    "area_px": float(r.area_px),
                    "score": r.score,
                    "defect_type_id": type_ids[_type_key(r.defect_type)]
                    if r.defect_type is not None and r.defect_type.strip()
                    else None,
                    "confidence": r.confidence,
                    "is_unknown": r.is_unknown,
                }
            )
    region_ids: dict[tuple[int, int], int] = {}
    if region_rows:
        regions = DefectRegion.__table__
        got = session.execute(
            insert(regions).returning(regions.c.id, sort_by_parameter_order=True),  # type: ignore[arg-type]
            region_rows,
        )
        region_ids = {owner: int(row[0]) for owner, row in zip(owners, got, strict=True)}
    artifact_rows = [
        {
            **{f: getattr(a, f) for f in _ARTIFACT_COLUMNS},
            "kind": ArtifactKind(a.kind),
            "inspection_id": ident,
            "region_id": region_ids[(pos, a.region_index)] if a.region_index is not None else None,
            "created_at": now,
        }
        for pos, (d, ident) in enumerate(zip(items, inspection_ids, strict=True))
        for a in d.artifacts
    ]
    if artifact_rows:
        session.execute(insert(Artifact.__table__), artifact_rows)  # type: ignore[arg-type]
    return {
        (d.station_id, d.idempotency_key): ident
        for d, ident in zip(items, inspection_ids, strict=True)
    }


def _key_chunks(items: Sequence[InspectionData]) -> Iterable[tuple[int, list[str]]]:
    """The items' idempotency keys per station, in chunks fit for an ``IN (...)`` list."""
    by_station: dict[int, set[str]] = {}
    for item in items:
        by_station.setdefault(item.station_id, set()).add(item.idempotency_key)
    for station_id, keys in by_station.items():
        ordered = sorted(keys)
        for start in range(0, len(ordered), _IN_CHUNK):
            yield station_id, ordered[start : start + _IN_CHUNK]


def _existing_ids(session: Session, items: Sequence[InspectionData]) -> dict[tuple[int, str], int]:
    """Ids of the items' keys already stored."""
    found: dict[tuple[int, str], int] = {}
    for station_id, chunk in _key_chunks(items):
        rows = session.execute(
            select(Inspection.idempotency_key, Inspection.id).where(
                Inspection.station_id == station_id, Inspection.idempotency_key.in_(chunk)
            )
        ).tuples()
        for key, ident in rows:
            found[(station_id, key)] = ident
    return found


def _existing_by_key(
    session: Session, items: Sequence[InspectionData]
) -> dict[tuple[int, str], Inspection]:
    found: dict[tuple[int, str], Inspection] = {}
    for station_id, chunk in _key_chunks(items):
        stmt = select(Inspection).where(
            Inspection.station_id == station_id, Inspection.idempotency_key.in_(chunk)
        )
        for inspection in session.scalars(stmt):
            found[(station_id, inspection.idempotency_key)] = inspection
    return found


def _find_by_key(session: Session, station_id: int, key: str) -> Inspection | None:
    return session.scalar(
        select(Inspection).where(
            Inspection.station_id == station_id, Inspection.idempotency_key == key
        )
    )


def get_inspection(session: Session, inspection_id: int) -> Inspection:
    """One inspection with its regions, artifacts and labels loaded."""
    inspection = session.scalar(
        select(Inspection)
        .where(Inspection.id == inspection_id)
        .options(
            selectinload(Inspection.regions).selectinload(DefectRegion.defect_type),
            selectinload(Inspection.artifacts),
            selectinload(Inspection.labels),
        )
    )
    if inspection is None:
        raise NotFoundError(f"inspection {inspection_id} does not exist")
    return inspection


def list_inspections(
    session: Session,
    *,
    station_id: int | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    verdict: Verdict | str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Inspection]:
    """Inspections newest first (by capture time), filtered; regions loaded.

    ``since`` is inclusive, ``until`` exclusive.
    """
    stmt = select(Inspection).options(selectinload(Inspection.regions))
    if station_id is not None:
        stmt = stmt.where(Inspection.station_id == station_id)
    if since is not None:
        stmt = stmt.where(Inspection.captured_at >= _aware(since, "since"))
    if until is not None:
        stmt = stmt.where(Inspection.captured_at < _aware(until, "until"))
    if verdict is not None:
        stmt = stmt.where(Inspection.verdict == Verdict(verdict))
    stmt = stmt.order_by(Inspection.captured_at.desc(), Inspection.id.desc())
    return list(session.scalars(stmt.limit(_check_limit(limit)).offset(max(0, offset))))


def _check_limit(limit: int) -> int:
    if not 1 <= limit <= 1000:
        raise ValueError(f"limit must be in 1..1000, got {limit}")
    return limit


# -- review queue ------------------------------------------------------------------------------


def _encode_cursor(item: Inspection) -> str:
    raw = f"{int(item.has_unknown)}:{item.norm_score!r}:{item.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[bool, float, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        unknown, score, ident = base64.urlsafe_b64decode(padded).decode().split(":")
        return bool(int(unknown)), float(score), int(ident)
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise InvalidCursorError(f"malformed review-queue cursor {cursor!r}") from exc


def _review_filters(
    *,
    station_id: int | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    min_score: float | None,
    defect_type_id: int | None,
    unlabelled_only: bool,
) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = []
    if station_id is not None:
        filters.append(Inspection.station_id == station_id)
    if since is not None:
        filters.append(Inspection.captured_at >= _aware(since, "since"))
    if until is not None:
        filters.append(Inspection.captured_at < _aware(until, "until"))
    if min_score is not None:
        filters.append(Inspection.norm_score >= min_score)
    if defect_type_id is not None:
        filters.append(
            exists().where(
                DefectRegion.inspection_id == Inspection.id,
                DefectRegion.defect_type_id == defect_type_id,
            )
        )
    if unlabelled_only:
        filters.append(~exists().where(OperatorLabel.inspection_id == Inspection.id))
    return filters


def review_queue(
    session: Session,
    *,
    station_id: int | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    min_score: float | None = None,
    defect_type: str | None = None,
    unlabelled_only: bool = True,
    limit: int = 50,
    offset: int = 0,
    cursor: str | None = None,
) -> ReviewPage:
    """What operators should look at next.

    Order: inspections with an unknown-type region first, then by descending normalised score
    (clear anomalies, then the uncertain ones near the threshold, then clear passes), newest id
    breaking ties. ``defect_type`` keeps inspections with a region of that (predicted) type.
    Page with ``cursor`` (keyset, stable while new inspections arrive; preferred) or
    ``offset``. ``since`` is inclusive, ``until`` exclusive.
    """
    type_id: int | None = None
    if defect_type is not None:
        type_id = session.scalar(
            select(DefectType.id).where(DefectType.name == defect_type.strip().lower())
        )
        if type_id is None:
            return ReviewPage(items=[])
    filters = _review_filters(
        station_id=station_id,
        since=since,
        until=until,
        min_score=min_score,
        defect_type_id=type_id,
        unlabelled_only=unlabelled_only,
    )
    if cursor is not None:
        unknown, score, ident = _decode_cursor(cursor)
        filters.append(
            tuple_(Inspection.has_unknown, Inspection.norm_score, Inspection.id)
            < tuple_(unknown, score, ident)  # type: ignore[arg-type]
        )
    stmt: Select[tuple[Inspection]] = (
        select(Inspection)
        .where(*filters)
        .order_by(Inspection.has_unknown.desc(), Inspection.norm_score.desc(), Inspection.id.desc())
        .limit(_check_limit(limit))
        .options(
            selectinload(Inspection.regions).selectinload(DefectRegion.defect_type),
            selectinload(Inspection.artifacts),
        )
    )
    if cursor is None and offset:
        stmt = stmt.offset(offset)
    items = list(session.scalars(stmt))
    next_cursor = _encode_cursor(items[-1]) if len(items) == limit else None
    return ReviewPage(items=items, next_cursor=next_cursor)


# -- labels ------------------------------------------------------------------------------------


def add_label(
    session: Session,
    *,
    inspection_id: int,
    user_id: int,
    verdict: Verdict | str,
    defect_type: str | None = None,
    note: str | None = None,
) -> OperatorLabel:
    """Record an operator's verdict. Earlier labels are kept; the newest per user is current.

    A ``defect_type`` name that does not exist yet is created (that is how new types appear).
    """
    _get(session, Inspection, inspection_id, "inspection")
    user = _get(session, User, user_id, "user")
    if not user.is_active:
        raise InvalidStateError(f"user {user.username!r} is deactivated and cannot label")
    type_id = get_or_create_defect_type(session, defect_type).id if defect_type else None
    label = OperatorLabel(
        inspection_id=inspection_id,
        user_id=user_id,
        verdict=Verdict(verdict),
        defect_type_id=type_id,
        note=note,
        created_at=utcnow(),
    )
    session.add(label)
    session.flush()
    return label


def current_labels(session: Session, *, inspection_id: int) -> list[OperatorLabel]:
    """The current (newest) label of each operator who labelled the inspection, by user id."""
    latest = (
        select(func.max(OperatorLabel.id))
        .where(OperatorLabel.inspection_id == inspection_id)
        .group_by(OperatorLabel.user_id)
        .scalar_subquery()
    )
    stmt = (
        select(OperatorLabel)
        .where(OperatorLabel.id.in_(latest))
        .options(selectinload(OperatorLabel.defect_type), selectinload(OperatorLabel.user))
        .order_by(OperatorLabel.user_id)
    )
    return list(session.scalars(stmt))


def label_history(session: Session, *, inspection_id: int) -> list[OperatorLabel]:
    """Every label of the inspection, oldest first."""
    stmt = (
        select(OperatorLabel)
        .where(OperatorLabel.inspection_id == inspection_id)
        .order_by(OperatorLabel.id)
    )
    return list(session.scalars(stmt))


# -- retraining --------------------------------------------------------------------------------


def create_retrain_job(
    session: Session,
    *,
    station_id: int | None,
    base_model_version_id: int | None = None,
    detector_type: str | None = None,
    config: Mapping[str, Any] | None = None,
    requested_by: int | None = None,
    training_inspection_ids: Iterable[int] = (),
    split: str = "train",
) -> RetrainJob:
    """Queue a retraining job, optionally with its training set (see :func:`add_training_items`)."""
    job = RetrainJob(
        station_id=station_id,
        base_model_version_id=base_model_version_id,
        detector_type=detector_type,
        status=JobStatus.QUEUED,
        requested_by_id=requested_by,
        config=dict(config or {}),
        metrics={},
        log="",
        cancel_requested=False,
        created_at=utcnow(),
    )
    session.add(job)
    session.flush()
    add_training_items(
        session, retrain_job_id=job.id, inspection_ids=training_inspection_ids, split=split
    )
    write_audit(
        session,
        actor=requested_by,
        action="retrain_job.create",
        entity_type="retrain_job",
        entity_id=job.id,
        after={"station_id": station_id, "base_model_version_id": base_model_version_id},
    )
    return job


def add_training_items(
    session: Session, *, retrain_job_id: int, inspection_ids: Iterable[int], split: str = "train"
) -> int:
    """Mark inspections as part of a job's training set (retention keeps them); returns count.

    Already-listed inspections are skipped.
    """
    ids = sorted(set(inspection_ids))
    if not ids:
        return 0
    present = set(
        session.scalars(
            select(TrainingSetItem.inspection_id).where(
                TrainingSetItem.retrain_job_id == retrain_job_id,
                TrainingSetItem.inspection_id.in_(ids),
            )
        )
    )
    new = [i for i in ids if i not in present]
    session.add_all(
        TrainingSetItem(retrain_job_id=retrain_job_id, inspection_id=i, split=split) for i in new
    )
    session.flush()
    return len(new)


def update_retrain_job(
    session: Session,
    *,
    job_id: int,
    status: JobStatus | str | None = None,
    metrics: Mapping[str, Any] | None = None,
    append_log: str | None = None,
    error: str | None = None,
) -> RetrainJob:
    """Advance a job (queued -> running -> succeeded/failed/cancelled) and record progress.

    ``started_at``/``finished_at`` are set on entering running / a final state. ``metrics`` are
    merged into the stored ones; ``append_log`` is appended (the log keeps its last
    :data:`MAX_LOG_CHARS` characters).

    Raises:
        InvalidStateError: the job is already final or the transition is not allowed.
    """
    job = _get(session, RetrainJob, job_id, "retrain job")
    if job.status in FINAL_JOB_STATES:
        raise InvalidStateError(f"retrain job {job.id} is already {job.status.value}")
    if status is not None:
        target = JobStatus(status)
        if target not in _JOB_TRANSITIONS[job.status]:
            raise InvalidStateError(
                f"retrain job {job.id} is {job.status.value}; cannot become {target.value}"
            )
        now = utcnow()
        if target == JobStatus.RUNNING and job.started_at is None:
            job.started_at = now
        if target in FINAL_JOB_STATES:
            job.finished_at = now
        job.status = target
    if metrics:
        job.metrics = {**job.metrics, **metrics}
    if append_log:
        job.log = (job.log + append_log)[-MAX_LOG_CHARS:]
    if error is not None:
        job.error = error
    session.flush()
    return job


def request_cancel(
    session: Session, *, job_id: int, requested_by: int | str | Actor | None = None
) -> RetrainJob:
    """Ask a job to stop: queued jobs are cancelled at once, running ones see the flag."""
    job = _get(session, RetrainJob, job_id, "retrain job")
    if job.status in FINAL_JOB_STATES:
        return job
    job.cancel_requested = True
    if job.status == JobStatus.QUEUED:
        job.status = JobStatus.CANCELLED
        job.finished_at = utcnow()
    write_audit(
        session,
        actor=requested_by,
        action="retrain_job.cancel",
        entity_type="retrain_job",
        entity_id=job.id,
    )
    session.flush()
    return job


def claim_next_retrain_job(session: Session) -> RetrainJob | None:
    """Take the oldest queued job and mark it running (one worker gets each job).

    On PostgreSQL the row is locked with ``FOR UPDATE SKIP LOCKED``; on SQLite the write
    transaction (``BEGIN IMMEDIATE``) already serialises workers.
    """
    stmt = (
        select(RetrainJob)
        .where(RetrainJob.status == JobStatus.QUEUED)
        .order_by(RetrainJob.created_at, RetrainJob.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    job = session.scalar(stmt)
    if job is None:
        return None
    return update_retrain_job(session, job_id=job.id, status=JobStatus.RUNNING)


def training_set(session: Session, *, model_version_id: int) -> list[int]:
    """Ids of the inspections the model version was trained on (via its training job)."""
    version = _get(session, ModelVersion, model_version_id, "model version")
    if version.training_job_id is None:
        return []
    stmt = (
        select(TrainingSetItem.inspection_id)
        .where(TrainingSetItem.retrain_job_id == version.training_job_id)
        .order_by(TrainingSetItem.inspection_id)
    )
    return list(session.scalars(stmt))


def table_counts(session: Session) -> dict[str, int]:
    """Row count of every table (for diagnostics and tests)."""
    counts: dict[str, int] = {}
    for table in Base.metadata.sorted_tables:
        counts[table.name] = int(session.scalar(select(func.count()).select_from(table)) or 0)
    return counts
