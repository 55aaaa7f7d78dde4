"""Request and response bodies of the REST API (pydantic v2), and their builders from rows.

Responses are built from ORM rows by the ``*_out`` functions here, so the API and the
server-rendered pages show the same fields. Timestamps are UTC ISO 8601.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, field_validator, model_validator

from inspection.db.models import (
    ArtifactKind,
    AuditLog,
    DefectRegion,
    Inspection,
    JobStatus,
    ModelStatus,
    ModelVersion,
    OperatorLabel,
    RetrainJob,
    Role,
    Station,
    User,
    Verdict,
)
from inspection.services import review_queue
from inspection.services.thresholds import (
    IMAGE_THRESHOLD_MAX,
    IMAGE_THRESHOLD_MIN,
    ThresholdPreview,
)

USERNAME_PATTERN = r"^[A-Za-z0-9_.-]{3,64}$"
DEFECT_TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 _-]{0,63}$"
MIN_PASSWORD_LENGTH = 8
#: Largest id accepted anywhere (beyond it SQLite cannot even compare the value).
MAX_ID = 2**53


class _In(BaseModel):
    """Request bodies reject unknown fields, so typos are 422s rather than silently ignored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- auth ----------------------------------------------------------------------------------


class TokenRequest(_In):
    """Username and password for a bearer token."""

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class TokenOut(_Out):
    """A bearer token: send ``Authorization: Bearer <access_token>``."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    username: str
    role: Role


class MeOut(_Out):
    """The authenticated user."""

    id: int
    username: str
    display_name: str | None
    role: Role
    auth: str


# -- stations ------------------------------------------------------------------------------


class StationOut(_Out):
    """A station and its thresholds (``effective_image_threshold`` applies the default)."""

    id: int
    name: str
    line_id: int
    description: str | None
    image_threshold: float | None
    pixel_threshold: float | None
    effective_image_threshold: float
    thresholds_updated_at: dt.datetime | None
    retention_days: int | None


def station_out(station: Station) -> StationOut:
    """API view of a station."""
    return StationOut(
        id=station.id,
        name=station.name,
        line_id=station.line_id,
        description=station.description,
        image_threshold=station.image_threshold,
        pixel_threshold=station.pixel_threshold,
        effective_image_threshold=review_queue.image_threshold(station),
        thresholds_updated_at=station.thresholds_updated_at,
        retention_days=station.retention_days,
    )


OverlayStyle = Literal["heat", "contour"]


class OverlayScaleOut(_Out):
    """The colour scale of an inspection's heatmap overlay, in the heatmap's units."""

    vmin: float
    vmax: float
    levels: list[float]
    pixel_threshold: float | None
    units: str


class ThresholdsIn(_In):
    """New thresholds of a station; ``null`` restores the default (0.5 for the image score)."""

    # Strict: JSON numbers only (true, "0.6" are 422, never silently 1.0 or 0.6).
    image_threshold: StrictFloat | None = Field(ge=IMAGE_THRESHOLD_MIN, le=IMAGE_THRESHOLD_MAX)
    pixel_threshold: StrictFloat | None = Field(default=None, ge=0.0, le=1e6)


class ThresholdPreviewOut(_Out):
    """How many past inspections would change verdict at the proposed threshold."""

    station_id: int
    current: float
    proposed: float
    since: dt.datetime
    total: int
    to_fail: int
    to_pass: int
    flips: int
    confirmed: int
    contradicted: int


def preview_out(preview: ThresholdPreview) -> ThresholdPreviewOut:
    """API view of a threshold preview."""
    return ThresholdPreviewOut(
        station_id=preview.station_id,
        current=preview.current,
        proposed=preview.proposed,
        since=preview.since,
        total=preview.total,
        to_fail=preview.to_fail,
        to_pass=preview.to_pass,
        flips=preview.flips,
        confirmed=preview.confirmed,
        contradicted=preview.contradicted,
    )


# -- inspections ---------------------------------------------------------------------------


class RegionOut(_Out):
    """A defect region: box in frame pixels, predicted type or ``is_unknown``."""

    id: int
    x: int
    y: int
    w: int
    h: int
    area_px: float
    score: float | None
    defect_type: str | None
    confidence: float | None
    is_unknown: bool


def region_out(region: DefectRegion) -> RegionOut:
    """API view of a region (its defect type must be loaded)."""
    return RegionOut(
        id=region.id,
        x=region.x,
        y=region.y,
        w=region.w,
        h=region.h,
        area_px=region.area_px,
        score=region.score,
        defect_type=region.defect_type.name if region.defect_type is not None else None,
        confidence=region.confidence,
        is_unknown=region.is_unknown,
    )


class LabelOut(_Out):
    """An operator's label."""

    id: int
    user: str
    verdict: Verdict
    defect_type: str | None
    note: str | None
    created_at: dt.datetime


def label_out(label: OperatorLabel) -> LabelOut:
    """API view of a label (user and defect type must be loaded)."""
    return LabelOut(
        id=label.id,
        user=label.user.username,
        verdict=label.verdict,
        defect_type=label.defect_type.name if label.defect_type is not None else None,
        note=label.note,
        created_at=label.created_at,
    )


class InspectionOut(_Out):
    """One inspection as the queue and lists show it.

    ``threshold`` is the station's image threshold on ``norm_score``; ``uncertain`` means the
    score is within 0.1 of it; ``predicted_type`` is the type of the highest-scoring region
    (``unknown`` for an open-set rejection). ``width``/``height`` are the frame's pixels.
    """

    id: int
    station_id: int
    station: str
    captured_at: dt.datetime
    raw_score: float
    norm_score: float
    threshold: float
    verdict: Verdict
    uncertain: bool
    has_unknown: bool
    predicted_type: str | None
    regions: list[RegionOut]
    model_version_id: int | None
    latency_ms: float
    width: int | None
    height: int | None
    frame_url: str | None
    thumb_url: str | None
    overlay_url: str | None
    detail_url: str
    label: LabelOut | None


def predicted_type(inspection: Inspection) -> str | None:
    """The type of the inspection's strongest region, ``unknown``, or None without regions."""
    if not inspection.regions:
        return None
    best = max(inspection.regions, key=lambda r: (r.score or 0.0, r.area_px))
    if best.is_unknown:
        return "unknown"
    return best.defect_type.name if best.defect_type is not None else None


def inspection_out(
    inspection: Inspection, station: Station | None, label: OperatorLabel | None
) -> InspectionOut:
    """API view of an inspection (regions with types and artifacts must be loaded)."""
    threshold = review_queue.image_threshold(station)
    frame = review_queue.first_artifact(inspection, ArtifactKind.FRAME)
    heatmap = review_queue.first_artifact(inspection, ArtifactKind.HEATMAP)
    base = f"/api/inspections/{inspection.id}"
    return InspectionOut(
        id=inspection.id,
        station_id=inspection.station_id,
        station=station.name if station is not None else str(inspection.station_id),
        captured_at=inspection.captured_at,
        raw_score=inspection.raw_score,
        norm_score=inspection.norm_score,
        threshold=threshold,
        verdict=inspection.verdict,
        uncertain=review_queue.is_uncertain(inspection.norm_score, threshold),
        has_unknown=inspection.has_unknown,
        predicted_type=predicted_type(inspection),
        regions=[region_out(r) for r in inspection.regions],
        model_version_id=inspection.model_version_id,
        latency_ms=inspection.latency_ms,
        width=frame.width_px if frame is not None else None,
        height=frame.height_px if frame is not None else None,
        frame_url=f"{base}/frame" if frame is not None else None,
        thumb_url=f"{base}/frame?max_side=160" if frame is not None else None,
        overlay_url=f"{base}/overlay.png" if heatmap is not None else None,
        detail_url=f"/inspections/{inspection.id}",
        label=label_out(label) if label is not None else None,
    )


class QueuePageOut(_Out):
    """A page of the review queue; pass ``next_cursor`` as ``cursor`` for the next page."""

    items: list[InspectionOut]
    next_cursor: str | None


class QueueCountOut(_Out):
    """Size of the review queue (``capped``: there are more than ``count``)."""

    count: int
    capped: bool


class InspectionListOut(_Out):
    """A page of inspections newest first (offset pagination)."""

    items: list[InspectionOut]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class HistoryEntryOut(_Out):
    """An audit-log entry about an inspection (``label.add``, ``label.undo``)."""

    at: dt.datetime
    actor: str
    action: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def history_out(row: AuditLog) -> HistoryEntryOut:
    """API view of an inspection's audit entry."""
    return HistoryEntryOut(
        at=row.at, actor=row.actor, action=row.action, before=row.before, after=row.after
    )


class ModelBriefOut(_Out):
    """The model version that scored an inspection."""

    id: int
    name: str
    detector_type: str
    status: ModelStatus


class InspectionDetailOut(InspectionOut):
    """An inspection with every label and its labelling history."""

    labels: list[LabelOut]
    history: list[HistoryEntryOut]
    model_version: ModelBriefOut | None
    pixel_threshold: float | None


class LabelIn(_In):
    """An operator's verdict: ``pass`` (OK part) or ``fail`` with an optional defect type.

    A ``defect_type`` that does not exist yet is created (that is how new types appear).
    """

    verdict: Verdict
    defect_type: str | None = Field(default=None, pattern=DEFECT_TYPE_PATTERN)
    note: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _type_only_for_fail(self) -> LabelIn:
        if self.defect_type is not None and self.verdict != Verdict.FAIL:
            raise ValueError("defect_type is only allowed with verdict 'fail'")
        return self


class UndoOut(_Out):
    """The label an undo removed."""

    inspection_id: int
    undone: dict[str, Any]


class DefectTypeOut(_Out):
    """A defect type; ``key`` is its labelling key (1-9) in the UI, if any."""

    id: int
    name: str
    key: int | None


# -- models and jobs -----------------------------------------------------------------------


class ModelVersionOut(_Out):
    """A model version with its offline metrics and production statistics."""

    id: int
    station_id: int | None
    name: str
    detector_type: str
    status: ModelStatus
    artifact_path: str
    metrics: dict[str, Any]
    config: dict[str, Any]
    parent_id: int | None
    training_job_id: int | None
    created_at: dt.datetime
    activated_at: dt.datetime | None
    retired_at: dt.datetime | None
    production: dict[str, float | int | None]


def model_out(
    version: ModelVersion, production: dict[str, float | int | None] | None = None
) -> ModelVersionOut:
    """API view of a model version."""
    return ModelVersionOut(
        id=version.id,
        station_id=version.station_id,
        name=version.name,
        detector_type=version.detector_type,
        status=version.status,
        artifact_path=version.artifact_path,
        metrics=dict(version.metrics or {}),
        config=dict(version.config or {}),
        parent_id=version.parent_id,
        training_job_id=version.training_job_id,
        created_at=version.created_at,
        activated_at=version.activated_at,
        retired_at=version.retired_at,
        production=production or {},
    )


class CompareRowOut(_Out):
    """One metric of two model versions side by side (``delta`` = b - a when numeric)."""

    metric: str
    a: Any
    b: Any
    delta: float | None


class CompareOut(_Out):
    """Two model versions and their metrics side by side."""

    a: ModelVersionOut
    b: ModelVersionOut
    rows: list[CompareRowOut]


class RollbackIn(_In):
    """Which version to roll back to (default: the one active before the current one)."""

    to_version_id: int | None = Field(default=None, ge=1, le=MAX_ID)


class RetrainJobIn(_In):
    """Queue a retraining job for a station."""

    station_id: int = Field(ge=1, le=MAX_ID)
    base_model_version_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    detector_type: str | None = Field(default=None, max_length=64)


class RetrainJobOut(_Out):
    """A retraining job."""

    id: int
    station_id: int | None
    base_model_version_id: int | None
    detector_type: str | None
    status: JobStatus
    cancel_requested: bool
    metrics: dict[str, Any]
    error: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


def job_out(job: RetrainJob) -> RetrainJobOut:
    """API view of a retraining job."""
    return RetrainJobOut(
        id=job.id,
        station_id=job.station_id,
        base_model_version_id=job.base_model_version_id,
        detector_type=job.detector_type,
        status=job.status,
        cancel_requested=job.cancel_requested,
        metrics=dict(job.metrics or {}),
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


# -- users and audit -----------------------------------------------------------------------


class UserOut(_Out):
    """A user account (never the password hash)."""

    id: int
    username: str
    display_name: str | None
    role: Role
    is_active: bool
    created_at: dt.datetime
    last_login_at: dt.datetime | None


def user_out(user: User) -> UserOut:
    """API view of a user."""
    return UserOut(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        role=user.role,
        is_active=user.is_active,
        created_at=user.created_at,
        last_login_at=user.last_login_at,
    )


class UserIn(_In):
    """A new user account."""

    username: str = Field(pattern=USERNAME_PATTERN)
    role: Role
    password: str = Field(min_length=MIN_PASSWORD_LENGTH, max_length=1024)
    display_name: str | None = Field(default=None, max_length=200)


class UserPatch(_In):
    """Changes to a user account; omitted fields stay as they are."""

    role: Role | None = None
    is_active: bool | None = None
    password: str | None = Field(default=None, min_length=MIN_PASSWORD_LENGTH, max_length=1024)
    display_name: str | None = Field(default=None, max_length=200)

    @field_validator("password")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("password must not be blank")
        return value


class AuditOut(_Out):
    """An audit-log entry."""

    id: int
    at: dt.datetime
    actor: str
    action: str
    entity_type: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def audit_out(row: AuditLog) -> AuditOut:
    """API view of an audit-log row."""
    return AuditOut(
        id=row.id,
        at=row.at,
        actor=row.actor,
        action=row.action,
        entity_type=row.entity_type,
        entity_id=row.entity_id,
        before=row.before,
        after=row.after,
    )


class AuditPageOut(_Out):
    """A page of the audit log; pass ``next_before_id`` as ``before_id`` for the next."""

    items: list[AuditOut]
    next_before_id: int | None


class ErrorOut(_Out):
    """Every error response: a human-readable ``detail`` (plus ``errors`` for validation)."""

    detail: str
    errors: list[dict[str, Any]] | None = None
