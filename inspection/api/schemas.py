"""Request and response bodies of the REST API (pydantic v2), and their builders from rows.

Responses are read from ORM rows by attribute name (pydantic ``from_attributes``:
``UserOut.model_validate(user)``); the few computed fields (a station's effective threshold,
an inspection's URLs, a model's production statistics) are added by the ``*_out`` functions
here, so the API and the server-rendered pages show the same fields. Timestamps are UTC
ISO 8601.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, field_validator, model_validator

from inspection.api.deps import CurrentUser
from inspection.db.models import (
    ArtifactKind,
    DefectType,
    Inspection,
    JobStatus,
    ModelStatus,
    ModelVersion,
    OperatorLabel,
    Role,
    Station,
    User,
    Verdict,
)
from inspection.services import review_queue
from inspection.services.line_stats import StationSummary
from inspection.services.thresholds import (
    IMAGE_THRESHOLD_MAX,
    IMAGE_THRESHOLD_MIN,
)
from inspection.services.users import MIN_PASSWORD_LENGTH, check_password_policy

USERNAME_PATTERN = r"^[A-Za-z0-9_.-]{3,64}$"
DEFECT_TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 _-]{0,63}$"

#: Largest id accepted anywhere (beyond it SQLite cannot even compare the value).
MAX_ID = 2**53


class _In(BaseModel):
    """Request bodies reject unknown fields, so typos are 422s rather than silently ignored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _FromRow(_Out):
    """A response read from an ORM row or a dataclass by attribute name."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)


class _Row:
    """``row`` seen with some attributes added or replaced: the computed fields of a response
    read with ``from_attributes``."""

    def __init__(self, row: object, **extra: object) -> None:
        # The added attributes are plain instance attributes, so reading them costs no call
        # to __getattr__ (which only runs for the names this object does not have).
        self.__dict__.update(extra)
        self.__dict__["_row"] = row

    def __getattr__(self, name: str) -> object:
        return getattr(self.__dict__["_row"], name)


def _name(value: object) -> object:
    """A defect type as its name (other values unchanged)."""
    return value.name if isinstance(value, DefectType) else value


def _as_dict(value: object) -> object:
    """A JSON column that may be NULL as a (copied) dict."""
    return dict(value or {}) if value is None or isinstance(value, dict) else value


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


class MeOut(_FromRow):
    """The authenticated user."""

    id: int
    username: str
    display_name: str | None
    role: Role
    auth: str


def me_out(user: CurrentUser) -> MeOut:
    """API view of the request's user (``auth``: how it authenticated, cookie or token)."""
    return MeOut.model_validate(_Row(user, auth=user.via))


# -- stations ------------------------------------------------------------------------------


class StationOut(_FromRow):
    """A station and its thresholds: ``image_threshold``/``pixel_threshold`` are the operators'
    (UI override, null when unset); ``effective_image_threshold`` is what the station applies
    and ``image_threshold_source`` where it comes from ("UI override", "station config":
    the station's file, or "model calibration": 0.5 on the normalised score)."""

    id: int
    name: str
    line_id: int
    description: str | None
    image_threshold: float | None
    pixel_threshold: float | None
    effective_image_threshold: float
    image_threshold_source: str
    config_image_threshold: float | None
    effective_pixel_threshold: float | None
    thresholds_updated_at: dt.datetime | None
    retention_days: int | None


def station_out(station: Station) -> StationOut:
    """API view of a station."""
    row = _Row(
        station,
        effective_image_threshold=review_queue.image_threshold(station),
        image_threshold_source=review_queue.threshold_source(station),
        effective_pixel_threshold=review_queue.pixel_threshold(station),
    )
    return StationOut.model_validate(row)


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


class ThresholdPreviewOut(_FromRow):
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


# -- inspections ---------------------------------------------------------------------------


class RegionOut(_FromRow):
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

    _type_name = field_validator("defect_type", mode="before")(_name)


class LabelOut(_FromRow):
    """An operator's label."""

    id: int
    user: str
    verdict: Verdict
    defect_type: str | None
    note: str | None
    created_at: dt.datetime

    _type_name = field_validator("defect_type", mode="before")(_name)

    @field_validator("user", mode="before")
    @classmethod
    def _username(cls, value: object) -> object:
        return value.username if isinstance(value, User) else value


def label_out(label: OperatorLabel) -> LabelOut:
    """API view of a label (user and defect type must be loaded)."""
    return LabelOut.model_validate(label)


class InspectionOut(_FromRow):
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
    return InspectionOut.model_validate(_inspection_row(inspection, station, label))


def _inspection_row(
    inspection: Inspection, station: Station | None, label: OperatorLabel | None
) -> _Row:
    """``inspection`` with the computed fields of :class:`InspectionOut`."""
    threshold = review_queue.image_threshold(station)
    frame = review_queue.first_artifact(inspection, ArtifactKind.FRAME)
    heatmap = review_queue.first_artifact(inspection, ArtifactKind.HEATMAP)
    base = f"/api/inspections/{inspection.id}"
    return _Row(
        inspection,
        station=station.name if station is not None else str(inspection.station_id),
        threshold=threshold,
        uncertain=review_queue.is_uncertain(inspection.norm_score, threshold),
        predicted_type=predicted_type(inspection),
        width=frame.width_px if frame is not None else None,
        height=frame.height_px if frame is not None else None,
        frame_url=f"{base}/frame" if frame is not None else None,
        thumb_url=f"{base}/frame?max_side=160" if frame is not None else None,
        overlay_url=f"{base}/overlay.png" if heatmap is not None else None,
        detail_url=f"/inspections/{inspection.id}",
        label=label,
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


class HistoryEntryOut(_FromRow):
    """An audit-log entry about an inspection (``label.add``, ``label.undo``)."""

    at: dt.datetime
    actor: str
    action: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class ModelBriefOut(_FromRow):
    """The model version that scored an inspection."""

    id: int
    name: str
    detector_type: str
    status: ModelStatus


class StationSummaryOut(_FromRow):
    """A station on the line overview: last 24 h counts, throughput and health."""

    station: StationOut
    n_pass: int
    n_fail: int
    yield_pct: float | None
    per_minute: float
    mean_latency_ms: float | None
    last_at: dt.datetime | None
    health: str
    to_review: int
    active_model: ModelBriefOut | None
    latest_ids: list[int]


def station_summary_out(summary: StationSummary) -> StationSummaryOut:
    """API view of a station on the line overview."""
    row = _Row(
        summary,
        station=station_out(summary.station),
        latest_ids=[i.id for i in summary.latest],
    )
    return StationSummaryOut.model_validate(row)


class InspectionDetailOut(InspectionOut):
    """An inspection with every label and its labelling history."""

    labels: list[LabelOut]
    history: list[HistoryEntryOut]
    model_version: ModelBriefOut | None
    pixel_threshold: float | None


def inspection_detail_out(detail: review_queue.InspectionDetail) -> InspectionDetailOut:
    """API view of one inspection with its labels (newest last), history and model version."""
    row = _Row(
        _inspection_row(
            detail.inspection, detail.station, detail.labels[-1] if detail.labels else None
        ),
        labels=detail.labels,
        history=detail.history,
        model_version=detail.model_version,
        pixel_threshold=review_queue.pixel_threshold(detail.station),
    )
    return InspectionDetailOut.model_validate(row)


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
    """A defect type with its labelling keys (1-9) in the UI: ``keys`` maps a station id to the
    type's key there (each station has its own mapping); ``key`` is the key at the station
    asked about (None: not asked, or no key there)."""

    id: int
    name: str
    key: int | None = None
    keys: dict[int, int] = {}


def defect_type_out(
    defect_type: Any, keys: dict[int, int], station_id: int | None = None
) -> DefectTypeOut:
    """The API shape of a defect type and its keys ``{station_id: key}``."""
    key = keys.get(station_id) if station_id is not None else None
    return DefectTypeOut(id=defect_type.id, name=defect_type.name, key=key, keys=keys)


# -- models and jobs -----------------------------------------------------------------------


class ModelVersionOut(_FromRow):
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

    _json_columns = field_validator("metrics", "config", mode="before")(_as_dict)


def model_out(
    version: ModelVersion, production: dict[str, float | int | None] | None = None
) -> ModelVersionOut:
    """API view of a model version."""
    return ModelVersionOut.model_validate(_Row(version, production=production or {}))


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


class RetrainJobOut(_FromRow):
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

    _json_columns = field_validator("metrics", mode="before")(_as_dict)


# -- users and audit -----------------------------------------------------------------------


class UserOut(_FromRow):
    """A user account (never the password hash)."""

    id: int
    username: str
    display_name: str | None
    role: Role
    is_active: bool
    created_at: dt.datetime
    last_login_at: dt.datetime | None


class UserIn(_In):
    """A new user account."""

    username: str = Field(pattern=USERNAME_PATTERN)
    role: Role
    password: str = Field(min_length=MIN_PASSWORD_LENGTH, max_length=1024)
    display_name: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _password_policy(self) -> UserIn:
        check_password_policy(self.password, username=self.username)
        return self


class UserPatch(_In):
    """Changes to a user account; omitted fields stay as they are."""

    role: Role | None = None
    is_active: bool | None = None
    password: str | None = Field(default=None, min_length=MIN_PASSWORD_LENGTH, max_length=1024)
    display_name: str | None = Field(default=None, max_length=200)

    @field_validator("password")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None:
            check_password_policy(value)
        return value


class AuditOut(_FromRow):
    """An audit-log entry."""

    id: int
    at: dt.datetime
    actor: str
    action: str
    entity_type: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditPageOut(_Out):
    """A page of the audit log; pass ``next_before_id`` as ``before_id`` for the next."""

    items: list[AuditOut]
    next_before_id: int | None


class ErrorOut(_Out):
    """Every error response: a human-readable ``detail`` (plus ``errors`` for validation)."""

    detail: str
    errors: list[dict[str, Any]] | None = None
