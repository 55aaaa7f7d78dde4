"""SQLAlchemy 2 typed models: the one source of truth for the schema.

Alembic revisions in ``migrations/versions`` must match these models exactly (a test runs
``compare_metadata`` on SQLite and PostgreSQL), and ``docs/schema.md`` is generated from them.

Conventions:

* Every timestamp is a timezone-aware UTC ``datetime`` (:class:`UTCDateTime`), on SQLite too.
* Enumerations are stored as short strings with a CHECK constraint (no native PostgreSQL enum
  types, so migrations stay portable and downgrades leave nothing behind).
* High-volume tables (inspections, regions, artifacts, audit log) use 64-bit keys on PostgreSQL
  and SQLite's ``INTEGER PRIMARY KEY`` rowid.
* Constraint and index names follow :data:`NAMING_CONVENTION`, so migrations can name them.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Dialect,
    Double,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import DateTime, TypeDecorator

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: 64-bit primary key on PostgreSQL; plain INTEGER on SQLite so it aliases the rowid and
#: autoincrements (SQLite only does that for exactly ``INTEGER PRIMARY KEY``).
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> dt.datetime:
    """The current time as an aware UTC datetime (the default of every timestamp column)."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC timestamps on every engine.

    Aware values are converted to UTC before they are stored; naive values are rejected, because
    a naive time from a station's local clock would silently be off by hours. SQLite returns
    naive strings, which are marked as UTC on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware datetime (UTC)")
        utc = value.astimezone(dt.UTC)
        # SQLite stores text; drop the offset so stored values sort correctly as strings.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Verdict(enum.StrEnum):
    """Outcome of an inspection or of an operator's review."""

    PASS = "pass"
    FAIL = "fail"


class ModelStatus(enum.StrEnum):
    """Life cycle of a model version: trained -> candidate -> active -> retired."""

    CANDIDATE = "candidate"
    ACTIVE = "active"
    RETIRED = "retired"


class ArtifactKind(enum.StrEnum):
    """What a stored file is: the captured frame, its anomaly heatmap, an overlay or a crop."""

    FRAME = "frame"
    HEATMAP = "heatmap"
    OVERLAY = "overlay"
    CROP = "crop"


class JobStatus(enum.StrEnum):
    """State of a retraining job; ``succeeded``, ``failed`` and ``cancelled`` are final."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Role(enum.StrEnum):
    """What a user may do: operators label, engineers tune and retrain, admins manage users."""

    OPERATOR = "operator"
    ENGINEER = "engineer"
    ADMIN = "admin"


def _str_enum(cls: type[enum.StrEnum], name: str) -> Enum:
    """A portable enum column: VARCHAR(16) plus a named CHECK constraint, storing ``.value``."""
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    """Declarative base carrying the shared metadata and naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dt.datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        float: Double(),
    }


class Line(Base):
    """A production line; groups stations."""

    __tablename__ = "line"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    stations: Mapped[list[Station]] = relationship(back_populates="line")


class Station(Base):
    """One inspection station (camera position on a line), with its operator-tunable settings.

    ``image_threshold`` applies to the image-level normalised score, ``pixel_threshold`` to the
    heatmap when segmenting defect regions; both are changed without retraining and every change
    is written to the audit log. ``retention_days`` is how long plain passes are kept
    (``None``: forever).

    ``config_image_threshold`` and ``config_pixel_threshold`` are what the station's own
    configuration file says, written by the station every time it starts; a station applies
    the operators' threshold when set, else its file's, else 0.5 (the model's calibrated
    threshold on the normalised score), and the UI shows which (services/thresholds.py).
    """

    __tablename__ = "station"

    id: Mapped[int] = mapped_column(primary_key=True)
    line_id: Mapped[int] = mapped_column(ForeignKey("line.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    image_threshold: Mapped[float | None]
    pixel_threshold: Mapped[float | None]
    thresholds_updated_at: Mapped[dt.datetime | None]
    retention_days: Mapped[int | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    config_image_threshold: Mapped[float | None]
    config_pixel_threshold: Mapped[float | None]

    line: Mapped[Line] = relationship(back_populates="stations")
    cameras: Mapped[list[Camera]] = relationship(back_populates="station")


class Camera(Base):
    """A camera attached to a station (a station may have several views)."""

    __tablename__ = "camera"
    __table_args__ = (UniqueConstraint("station_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    station_id: Mapped[int] = mapped_column(ForeignKey("station.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    serial: Mapped[str | None] = mapped_column(String(100))
    width_px: Mapped[int | None]
    height_px: Mapped[int | None]
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    station: Mapped[Station] = relationship(back_populates="cameras")


class User(Base):
    """A person using the UI/API. ``password_hash`` is an argon2 hash, never a password.

    Usernames are unique regardless of case (``uq_users_username_lower``), so "OP1" and "op1"
    cannot both exist. ``session_generation`` is part of every session cookie and token; raising
    it (password change, deactivation, "sign out everywhere") ends all of the user's logins.
    """

    __tablename__ = "users"
    __table_args__ = (Index("uq_users_username_lower", func.lower(text("username")), unique=True),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[Role] = mapped_column(_str_enum(Role, "role"))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[dt.datetime | None]
    session_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class RevokedSession(Base):
    """A single login (cookie or bearer token, by its random session id) ended before it
    expired: by ``POST /logout`` or ``POST /api/auth/logout``. Rows past ``expires_at`` are
    useless (the signature has expired too) and are purged when new ones are written."""

    __tablename__ = "revoked_session"

    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    revoked_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)


class LoginFailure(Base):
    """Failed logins per (lower-cased username, client address), persisted so a restart does
    not reset them: ``failures`` within the window and the time until which this pair is
    refused (``locked_until``; grows with every failure past the free ones)."""

    __tablename__ = "login_failure"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[dt.datetime] = mapped_column(index=True)
    locked_until: Mapped[dt.datetime | None]


class DefectType(Base):
    """A named defect class (crack, blowhole, ...). New types appear when operators create them.

    Its labelling keys are per station (:class:`StationDefectKey`).
    """

    __tablename__ = "defect_type"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class StationDefectKey(Base):
    """A defect type's labelling key (1-9) at one station: each station has its own mapping.

    A type takes the lowest free key at a station when it is created there or first labelled
    there (a new station starts with the first nine types the plant knows); keys never move
    afterwards. A type without a row has no key at that station (all nine taken).
    """

    __tablename__ = "station_defect_key"
    __table_args__ = (Index("uq_station_defect_key_station_key", "station_id", "key", unique=True),)

    station_id: Mapped[int] = mapped_column(
        ForeignKey("station.id", ondelete="CASCADE"), primary_key=True
    )
    defect_type_id: Mapped[int] = mapped_column(
        ForeignKey("defect_type.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[int] = mapped_column(Integer)


class RetrainJob(Base):
    """A (re)training run for a station: queued -> running -> succeeded/failed/cancelled.

    ``cancel_requested`` is set by the UI and polled by the worker; ``log`` holds the tail of
    the job's log. The inspections it trained on are listed in ``training_set_item``.
    """

    __tablename__ = "retrain_job"
    __table_args__ = (Index(None, "status", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    station_id: Mapped[int | None] = mapped_column(
        ForeignKey("station.id", ondelete="SET NULL"), index=True
    )
    base_model_version_id: Mapped[int | None] = mapped_column(
        # model_version -> retrain_job -> model_version is a cycle: created after both tables.
        ForeignKey("model_version.id", ondelete="SET NULL", use_alter=True)
    )
    detector_type: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[JobStatus] = mapped_column(_str_enum(JobStatus, "status"))
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    log: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]


class ModelVersion(Base):
    """A trained detector: where its artifact is, how it was configured and how well it scored.

    At most one version per station is ``active`` (a partial unique index enforces it);
    ``parent_id`` is the version it was retrained from, ``training_job_id`` the job that made it.
    """

    __tablename__ = "model_version"
    __table_args__ = (
        Index(
            "uq_model_version_one_active_per_station",
            "station_id",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    station_id: Mapped[int | None] = mapped_column(
        ForeignKey("station.id", ondelete="RESTRICT"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    detector_type: Mapped[str] = mapped_column(String(64))
    artifact_path: Mapped[str] = mapped_column(String(1024))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[ModelStatus] = mapped_column(_str_enum(ModelStatus, "status"))
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_version.id", ondelete="SET NULL")
    )
    training_job_id: Mapped[int | None] = mapped_column(
        ForeignKey("retrain_job.id", ondelete="SET NULL")
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    activated_at: Mapped[dt.datetime | None]
    retired_at: Mapped[dt.datetime | None]


class Inspection(Base):
    """One inspected frame: scores, verdict and latency, idempotent per station.

    ``idempotency_key`` is unique per station (the station's frame UUID or sequence number), so
    replaying a station's offline spool can never insert an inspection twice. ``norm_score`` is
    the detector's normalised image score (threshold at 0.5 unless the station overrides it);
    ``has_unknown`` is true when any region's defect type is unknown, which puts the inspection
    at the head of the review queue.
    """

    __tablename__ = "inspection"
    __table_args__ = (
        UniqueConstraint("station_id", "idempotency_key"),
        Index(None, "station_id", "captured_at"),
        # The review queue: unknown types first, then by descending normalised score.
        Index(None, "station_id", "has_unknown", "norm_score", "id"),
        Index(None, "has_unknown", "norm_score", "id"),
        Index(None, "captured_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    station_id: Mapped[int] = mapped_column(ForeignKey("station.id", ondelete="RESTRICT"))
    camera_id: Mapped[int | None] = mapped_column(ForeignKey("camera.id", ondelete="SET NULL"))
    captured_at: Mapped[dt.datetime]
    frame_ref: Mapped[str] = mapped_column(String(512))
    idempotency_key: Mapped[str] = mapped_column(String(64))
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_version.id", ondelete="RESTRICT"), index=True
    )
    raw_score: Mapped[float]
    norm_score: Mapped[float]
    verdict: Mapped[Verdict] = mapped_column(_str_enum(Verdict, "verdict"))
    latency_ms: Mapped[float]
    has_unknown: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    regions: Mapped[list[DefectRegion]] = relationship(
        back_populates="inspection",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="DefectRegion.id",
    )
    artifacts: Mapped[list[Artifact]] = relationship(
        back_populates="inspection",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Artifact.id",
    )
    labels: Mapped[list[OperatorLabel]] = relationship(
        back_populates="inspection",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="OperatorLabel.id",
    )


class DefectRegion(Base):
    """A connected anomalous region of an inspection: box in pixels, area and defect type.

    ``x, y, w, h`` are the bounding box in frame pixels; ``area_px`` is the number of anomalous
    pixels (not ``w*h``). ``is_unknown`` marks an open-set rejection (no known type fits).
    """

    __tablename__ = "defect_region"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    inspection_id: Mapped[int] = mapped_column(
        ForeignKey("inspection.id", ondelete="CASCADE"), index=True
    )
    x: Mapped[int]
    y: Mapped[int]
    w: Mapped[int]
    h: Mapped[int]
    area_px: Mapped[float]
    score: Mapped[float | None]
    defect_type_id: Mapped[int | None] = mapped_column(
        ForeignKey("defect_type.id", ondelete="RESTRICT"), index=True
    )
    confidence: Mapped[float | None]
    is_unknown: Mapped[bool] = mapped_column(Boolean, default=False)

    inspection: Mapped[Inspection] = relationship(back_populates="regions")
    defect_type: Mapped[DefectType | None] = relationship()


class Artifact(Base):
    """A file in the artifact store belonging to an inspection (frame, heatmap, overlay, crop).

    ``store_key`` is content-addressed (``ab/cd/<sha256>.<ext>``), so identical files share one
    stored object; delete the file only when no other row has the same key.
    ``heatmap_max``/``heatmap_mean`` summarise heatmaps so lists need not load them.
    """

    __tablename__ = "artifact"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    inspection_id: Mapped[int] = mapped_column(
        ForeignKey("inspection.id", ondelete="CASCADE"), index=True
    )
    region_id: Mapped[int | None] = mapped_column(
        ForeignKey("defect_region.id", ondelete="CASCADE")
    )
    kind: Mapped[ArtifactKind] = mapped_column(_str_enum(ArtifactKind, "kind"))
    store_key: Mapped[str] = mapped_column(String(512), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str | None] = mapped_column(String(64))
    width_px: Mapped[int | None]
    height_px: Mapped[int | None]
    heatmap_max: Mapped[float | None]
    heatmap_mean: Mapped[float | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    inspection: Mapped[Inspection] = relationship(back_populates="artifacts")
    region: Mapped[DefectRegion | None] = relationship()


class OperatorLabel(Base):
    """An operator's verdict on an inspection. Labels are never overwritten: each new label by
    the same operator is a new row, and the latest one per operator is the current one.
    """

    __tablename__ = "operator_label"
    __table_args__ = (Index(None, "inspection_id", "user_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    inspection_id: Mapped[int] = mapped_column(ForeignKey("inspection.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    verdict: Mapped[Verdict] = mapped_column(_str_enum(Verdict, "verdict"))
    defect_type_id: Mapped[int | None] = mapped_column(
        ForeignKey("defect_type.id", ondelete="RESTRICT")
    )
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    inspection: Mapped[Inspection] = relationship(back_populates="labels")
    user: Mapped[User] = relationship()
    defect_type: Mapped[DefectType | None] = relationship()


class TrainingSetItem(Base):
    """Which inspections a retraining job trained on; retention never deletes these."""

    __tablename__ = "training_set_item"

    retrain_job_id: Mapped[int] = mapped_column(
        ForeignKey("retrain_job.id", ondelete="CASCADE"), primary_key=True
    )
    inspection_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey("inspection.id", ondelete="RESTRICT"),
        primary_key=True,
        index=True,
    )
    split: Mapped[str] = mapped_column(String(16), default="train")


class AuditLog(Base):
    """Who changed what, when: ``before``/``after`` are JSON snapshots of the changed fields.

    ``actor`` keeps the username (or ``station:<name>``, ``system``) even if the user is deleted.
    """

    __tablename__ = "audit_log"
    __table_args__ = (Index(None, "entity_type", "entity_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None]
    after: Mapped[dict[str, Any] | None]
