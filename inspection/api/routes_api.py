"""The REST API under ``/api`` (documented at ``/docs``, schema at ``/openapi.json``).

Authentication: ``POST /api/auth/token`` returns a bearer token; browsers use the session
cookie from the login page plus the ``X-CSRF-Token`` header. Roles: ``operator`` reviews and
labels, ``engineer`` also changes thresholds, models and retraining, ``admin`` also manages
users. Every change is written to the audit log. Errors are JSON ``{"detail": ...}``: 401
anonymous, 403 wrong role or CSRF, 404 unknown ids, 409 illegal state changes, 422 invalid
input, 429 throttled logins, 503 database or artifact store unavailable.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.orm import Session

from inspection.api.deps import (
    Admin,
    AnyUser,
    Ctx,
    CurrentUser,
    Engineer,
    Operator,
    ReadSession,
    WriteSession,
    client_address,
)
from inspection.api.schemas import (
    IMAGE_THRESHOLD_MAX,
    IMAGE_THRESHOLD_MIN,
    MAX_ID,
    AuditOut,
    AuditPageOut,
    CompareOut,
    CompareRowOut,
    DefectTypeOut,
    ErrorOut,
    HistoryEntryOut,
    InspectionDetailOut,
    InspectionListOut,
    LabelIn,
    LabelOut,
    MeOut,
    ModelBriefOut,
    ModelVersionOut,
    OverlayScaleOut,
    OverlayStyle,
    QueueCountOut,
    QueuePageOut,
    RetrainJobIn,
    RetrainJobOut,
    RollbackIn,
    StationOut,
    ThresholdPreviewOut,
    ThresholdsIn,
    TokenOut,
    TokenRequest,
    UndoOut,
    UserIn,
    UserOut,
    UserPatch,
    inspection_out,
    label_out,
    model_out,
    station_out,
)
from inspection.db import repo
from inspection.db.engine import check_schema_at_head
from inspection.db.models import (
    Artifact,
    ArtifactKind,
    Inspection,
    ModelVersion,
    Station,
    Verdict,
)
from inspection.errors import NotFoundError
from inspection.services import audit as audit_service
from inspection.services import jobs, labelling, line_stats, sessions, thresholds, users
from inspection.services import models as models_service
from inspection.services import review_queue as queue_reads

log = logging.getLogger(__name__)

IdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="Numeric id.")]
OptStation = Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only this station.")]
Since = Annotated[
    dt.datetime | None,
    Query(description="Captured at or after (ISO 8601; without offset means UTC)."),
]
Until = Annotated[dt.datetime | None, Query(description="Captured before (ISO 8601).")]
MinScore = Annotated[
    float | None, Query(ge=-1e6, le=1e6, description="Normalised score at least this.")
]
TypeName = Annotated[
    str | None, Query(min_length=1, max_length=64, description="Predicted defect type name.")
]
Days = Annotated[int, Query(ge=1, le=3650, description="Window: the last this many days.")]
IncludePasses = Annotated[
    bool,
    Query(
        description="Also list clear passes (by default the queue holds the parts the station "
        "flagged plus the uncertain band just below its threshold)."
    ),
]

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Not logged in."},
    403: {"model": ErrorOut, "description": "Role does not allow this, or CSRF token missing."},
    422: {"model": ErrorOut, "description": "Invalid input."},
    503: {"model": ErrorOut, "description": "Database or artifact store unavailable."},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such id."}
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "Not allowed in the current state."}
}

router = APIRouter(prefix="/api", responses=ERRORS)


def aware(value: dt.datetime | None) -> dt.datetime | None:
    """``value`` as an aware datetime; naive values are taken to be UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def actor_of(user: CurrentUser) -> repo.Actor:
    """The audit-log actor of a request."""
    return repo.Actor(name=user.username, user_id=user.id)


# -- health and auth -----------------------------------------------------------------------


class HealthOut(BaseModel):
    """Liveness: the app process serves requests."""

    model_config = ConfigDict(extra="forbid")
    status: str


class ReadyOut(BaseModel):
    """Readiness: the database answers and its schema is at this code's newest migration."""

    model_config = ConfigDict(extra="forbid")
    status: str
    schema_revision: str


@router.get("/health", tags=["health"], response_model=HealthOut)
def health() -> HealthOut:
    """Liveness (anonymous): ``ok`` while the process serves requests.

    Touches no database, so an orchestrator does not restart healthy servers during a database
    outage; whether requests can be served is ``/api/ready``.
    """
    return HealthOut(status="ok")


@router.get("/ready", tags=["health"], response_model=ReadyOut)
def ready(ctx: Ctx) -> ReadyOut:
    """Readiness (anonymous): ``ready`` when the database answers and its schema is at head.

    503 (with the reason) while the database is unreachable or its schema is behind or ahead
    of this code; load balancers stop sending requests until it answers 200 again.
    """
    revision = check_schema_at_head(ctx.engine)
    return ReadyOut(status="ready", schema_revision=revision)


@router.post(
    "/auth/token",
    tags=["auth"],
    response_model=TokenOut,
    responses={429: {"model": ErrorOut, "description": "Too many failed logins."}},
)
def issue_token(body: TokenRequest, request: Request, ctx: Ctx, session: WriteSession) -> TokenOut:
    """Exchange a username and password for a bearer token (valid for a shift; ended early by
    ``POST /api/auth/logout``)."""
    user = sessions.login(
        session,
        ctx.throttle,
        username=body.username,
        password=body.password,
        address=client_address(request),
    )
    return TokenOut(
        access_token=ctx.signer.new_token(user),
        expires_in=ctx.signer.token_max_age_s,
        username=user.username,
        role=user.role,
    )


@router.get("/auth/me", tags=["auth"], response_model=MeOut)
def me(user: AnyUser) -> MeOut:
    """Who the credentials belong to."""
    return MeOut(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        role=user.role,
        auth=user.via,
    )


# -- stations and overview -----------------------------------------------------------------


@router.get("/stations", tags=["stations"], response_model=list[StationOut])
def list_stations(user: Operator, session: ReadSession) -> list[StationOut]:
    """Every station with its thresholds."""
    return [station_out(s) for s in queue_reads.stations_by_id(session).values()]


@router.get(
    "/stations/{station_id}", tags=["stations"], response_model=StationOut, responses=NOT_FOUND
)
def get_station(station_id: IdPath, user: Operator, session: ReadSession) -> StationOut:
    """One station."""
    return station_out(repo.get_station(session, station_id))


@router.put(
    "/stations/{station_id}/thresholds",
    tags=["stations"],
    response_model=StationOut,
    responses=NOT_FOUND,
)
def set_thresholds(
    station_id: IdPath, body: ThresholdsIn, user: Engineer, session: WriteSession
) -> StationOut:
    """Change a station's thresholds (engineer; audited; takes effect without retraining)."""
    station = thresholds.set_thresholds(
        session,
        station_id=station_id,
        image_threshold=body.image_threshold,
        pixel_threshold=body.pixel_threshold,
        actor=actor_of(user),
    )
    return station_out(station)


@router.get(
    "/stations/{station_id}/threshold-preview",
    tags=["stations"],
    response_model=ThresholdPreviewOut,
    responses=NOT_FOUND,
)
def threshold_preview(
    station_id: IdPath,
    user: Operator,
    session: ReadSession,
    image_threshold: Annotated[float, Query(ge=IMAGE_THRESHOLD_MIN, le=IMAGE_THRESHOLD_MAX)],
    days: Days = 30,
) -> ThresholdPreviewOut:
    """How many of the last ``days`` days' inspections would change verdict."""
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    preview = thresholds.threshold_preview(
        session, station_id=station_id, proposed=image_threshold, since=since
    )
    return ThresholdPreviewOut.model_validate(preview)


class StationSummaryOut(BaseModel):
    """A station on the line overview: last 24 h counts, throughput and health."""

    model_config = ConfigDict(extra="forbid")
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


@router.get("/overview", tags=["stations"], response_model=list[StationSummaryOut])
def overview(user: Operator, ctx: Ctx, session: ReadSession) -> list[StationSummaryOut]:
    """The line overview: every station's last 24 h, throughput and newest inspections."""
    summaries = line_stats.station_summaries(
        session, offline_after_s=ctx.settings.station_offline_after_s
    )
    return [
        StationSummaryOut(
            station=station_out(s.station),
            n_pass=s.n_pass,
            n_fail=s.n_fail,
            yield_pct=s.yield_pct,
            per_minute=s.per_minute,
            mean_latency_ms=s.mean_latency_ms,
            last_at=s.last_at,
            health=s.health,
            to_review=s.to_review,
            active_model=_brief(s.active_model),
            latest_ids=[i.id for i in s.latest],
        )
        for s in summaries
    ]


def _brief(version: ModelVersion | None) -> ModelBriefOut | None:
    if version is None:
        return None
    return ModelBriefOut.model_validate(version)


# -- review queue and inspections ----------------------------------------------------------


@router.get("/review-queue", tags=["review"], response_model=QueuePageOut)
def review_queue(
    user: Operator,
    session: ReadSession,
    station_id: OptStation = None,
    since: Since = None,
    until: Until = None,
    min_score: MinScore = None,
    defect_type: TypeName = None,
    include_labelled: Annotated[
        bool, Query(description="Also list inspections that already have a label.")
    ] = False,
    include_passes: IncludePasses = False,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of the previous page.")
    ] = None,
) -> QueuePageOut:
    """What to review next: the parts the stations flagged and the uncertain ones just below
    their threshold (``include_passes`` adds clear passes), unknown defect types first, then by
    descending score.

    Keyset pagination: pass the previous page's ``next_cursor`` (stable while new inspections
    arrive and items are labelled).
    """
    page = queue_reads.queue_page(
        session,
        station_id=station_id,
        since=aware(since),
        until=aware(until),
        min_score=min_score,
        defect_type=defect_type,
        include_labelled=include_labelled,
        include_passes=include_passes,
        limit=limit,
        cursor=cursor,
    )
    return QueuePageOut(
        items=[
            inspection_out(i, page.stations.get(i.station_id), page.labels.get(i.id))
            for i in page.items
        ],
        next_cursor=page.next_cursor,
    )


@router.get("/review-queue/count", tags=["review"], response_model=QueueCountOut)
def review_queue_count(
    user: Operator,
    session: ReadSession,
    station_id: OptStation = None,
    since: Since = None,
    until: Until = None,
    min_score: MinScore = None,
    defect_type: TypeName = None,
    include_labelled: bool = False,
    include_passes: IncludePasses = False,
) -> QueueCountOut:
    """How many inspections wait in the queue with these filters (counted up to 10,000); with
    the default filters, the overview's "flagged, not reviewed"."""
    count, capped = queue_reads.queue_count(
        session,
        station_id=station_id,
        since=aware(since),
        until=aware(until),
        min_score=min_score,
        defect_type=defect_type,
        unlabelled_only=not include_labelled,
        include_passes=include_passes,
    )
    return QueueCountOut(count=count, capped=capped)


@router.get("/inspections", tags=["inspections"], response_model=InspectionListOut)
def list_inspections(
    user: Operator,
    session: ReadSession,
    station_id: OptStation = None,
    verdict: Verdict | None = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> InspectionListOut:
    """Inspections newest first, with offset pagination and the total count."""
    items, total = queue_reads.inspections_page(
        session,
        station_id=station_id,
        verdict=verdict,
        since=aware(since),
        until=aware(until),
        limit=limit,
        offset=offset,
    )
    stations = queue_reads.stations_by_id(session)
    labels = queue_reads.latest_labels(session, [i.id for i in items])
    return InspectionListOut(
        items=[inspection_out(i, stations.get(i.station_id), labels.get(i.id)) for i in items],
        total=total,
        limit=limit,
        offset=offset,
        next_offset=offset + limit if offset + limit < total else None,
    )


def inspection_detail(session: Session, inspection_id: int) -> InspectionDetailOut:
    """Everything the detail page and ``GET /api/inspections/{id}`` show."""
    d = queue_reads.inspection_detail(session, inspection_id)
    base = inspection_out(d.inspection, d.station, d.labels[-1] if d.labels else None)
    return InspectionDetailOut(
        **base.model_dump(exclude={"regions", "label"}),
        regions=base.regions,
        label=base.label,
        labels=[label_out(label) for label in d.labels],
        history=[HistoryEntryOut.model_validate(h) for h in d.history],
        model_version=_brief(d.model_version),
        pixel_threshold=queue_reads.pixel_threshold(d.station),
    )


@router.get(
    "/inspections/{inspection_id}",
    tags=["inspections"],
    response_model=InspectionDetailOut,
    responses=NOT_FOUND,
)
def get_inspection(
    inspection_id: IdPath, user: Operator, session: ReadSession
) -> InspectionDetailOut:
    """One inspection with regions, every label, labelling history and its model version."""
    return inspection_detail(session, inspection_id)


def _artifact(session: Session, inspection_id: int, kind: ArtifactKind) -> Artifact:
    artifact = session.scalar(
        select(Artifact)
        .where(
            Artifact.inspection_id == inspection_id,
            Artifact.kind == kind,
            Artifact.region_id.is_(None),
        )
        .order_by(Artifact.id)
        .limit(1)
    )
    if artifact is None:
        if session.get(Inspection, inspection_id) is None:
            raise NotFoundError(f"inspection {inspection_id} does not exist")
        raise NotFoundError(f"inspection {inspection_id} has no stored {kind.value}")
    return artifact


IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}, "image/jpeg": {}}, "description": "The image."},
    **NOT_FOUND,
}


@router.get(
    "/inspections/{inspection_id}/frame",
    tags=["inspections"],
    response_class=Response,
    responses=IMAGE_RESPONSES,
)
def frame(
    inspection_id: IdPath,
    user: Operator,
    ctx: Ctx,
    session: ReadSession,
    max_side: Annotated[
        int | None, Query(ge=16, le=4096, description="Thumbnail: longest side in pixels.")
    ] = None,
) -> Response:
    """The captured frame (``max_side``: a JPEG thumbnail)."""
    artifact = _artifact(session, inspection_id, ArtifactKind.FRAME)
    session.close()  # release the connection before file I/O
    image = (
        ctx.images.thumbnail(artifact.store_key, max_side)
        if max_side is not None
        else ctx.images.frame(artifact.store_key)
    )
    return Response(
        image.data,
        media_type=image.media_type,
        headers={"Cache-Control": "private, max-age=86400", "ETag": f'"{artifact.sha256}"'},
    )


def _heatmap_source(
    session: Session, inspection_id: int
) -> tuple[str, tuple[int, int] | None, float | None]:
    """The stored heatmap's key, the frame's (width, height) and the station's pixel threshold."""
    heatmap = _artifact(session, inspection_id, ArtifactKind.HEATMAP)
    frame_row = session.scalar(
        select(Artifact).where(
            Artifact.inspection_id == inspection_id,
            Artifact.kind == ArtifactKind.FRAME,
            Artifact.region_id.is_(None),
        )
    )
    station = session.scalar(
        select(Station)
        .join(Inspection, Inspection.station_id == Station.id)
        .where(Inspection.id == inspection_id)
    )
    size = None
    if frame_row is not None and frame_row.width_px and frame_row.height_px:
        size = (frame_row.width_px, frame_row.height_px)
    pixel_threshold = queue_reads.pixel_threshold(station)
    key = heatmap.store_key
    session.close()
    return key, size, pixel_threshold


@router.get(
    "/inspections/{inspection_id}/overlay.png",
    tags=["inspections"],
    response_class=Response,
    responses=IMAGE_RESPONSES,
)
def overlay(
    inspection_id: IdPath,
    user: Operator,
    ctx: Ctx,
    session: ReadSession,
    style: Annotated[
        OverlayStyle,
        Query(description="heat: the coloured map; contour: isolines only (defect stays visible)."),
    ] = "heat",
) -> Response:
    """The anomaly heatmap as a transparent PNG the size of the frame (colour scale: see
    ``overlay-scale``)."""
    key, size, pixel_threshold = _heatmap_source(session, inspection_id)
    image = ctx.images.overlay(key, size=size, pixel_threshold=pixel_threshold, style=style)
    return Response(
        image.data,
        media_type=image.media_type,
        headers={"Cache-Control": "private, max-age=3600"},
    )


@router.get(
    "/inspections/{inspection_id}/overlay-scale",
    tags=["inspections"],
    response_model=OverlayScaleOut,
    responses=NOT_FOUND,
)
def overlay_scale(
    inspection_id: IdPath, user: Operator, ctx: Ctx, session: ReadSession
) -> OverlayScaleOut:
    """The overlay's colour scale in the heatmap's units (per-pixel anomaly score): the value
    drawn transparent, the value drawn hottest, and the contour levels."""
    key, _size, pixel_threshold = _heatmap_source(session, inspection_id)
    scale = ctx.images.overlay_scale(key, pixel_threshold=pixel_threshold)
    return OverlayScaleOut(
        vmin=scale.vmin,
        vmax=scale.vmax,
        levels=list(scale.levels),
        pixel_threshold=scale.pixel_threshold,
        units="per-pixel anomaly score (detector units, as the pixel threshold)",
    )


@router.get(
    "/inspections/{inspection_id}/labels",
    tags=["labels"],
    response_model=list[LabelOut],
    responses=NOT_FOUND,
)
def list_labels(inspection_id: IdPath, user: Operator, session: ReadSession) -> list[LabelOut]:
    """Every label of the inspection, oldest first."""
    if session.get(Inspection, inspection_id) is None:
        raise NotFoundError(f"inspection {inspection_id} does not exist")
    return [label_out(x) for x in queue_reads.label_rows(session, inspection_id=inspection_id)]


@router.get(
    "/inspections/{inspection_id}/history",
    tags=["labels"],
    response_model=list[HistoryEntryOut],
    responses=NOT_FOUND,
)
def history(inspection_id: IdPath, user: Operator, session: ReadSession) -> list[HistoryEntryOut]:
    """Labels added and undone on the inspection, newest first (from the audit log)."""
    if session.get(Inspection, inspection_id) is None:
        raise NotFoundError(f"inspection {inspection_id} does not exist")
    return [
        HistoryEntryOut.model_validate(h)
        for h in queue_reads.inspection_history(session, inspection_id=inspection_id)
    ]


@router.post(
    "/inspections/{inspection_id}/labels",
    tags=["labels"],
    status_code=201,
    response_model=LabelOut,
    responses=NOT_FOUND,
)
def add_label(
    inspection_id: IdPath, body: LabelIn, user: Operator, session: WriteSession
) -> LabelOut:
    """Label an inspection: ``pass`` (OK) or ``fail`` with a defect type (new names create a
    new type). Earlier labels are kept; the newest is current."""
    label = labelling.add_label(
        session,
        inspection_id=inspection_id,
        user_id=user.id,
        verdict=body.verdict,
        defect_type=body.defect_type,
        note=body.note,
    )
    return label_out(label)


@router.delete(
    "/inspections/{inspection_id}/labels/latest",
    tags=["labels"],
    response_model=UndoOut,
    responses=NOT_FOUND,
)
def undo_label(inspection_id: IdPath, user: Operator, session: WriteSession) -> UndoOut:
    """Undo your newest label on the inspection (it returns to the queue; audited)."""
    snapshot = labelling.undo_label(session, inspection_id=inspection_id, user_id=user.id)
    return UndoOut(inspection_id=inspection_id, undone=snapshot)


@router.get("/defect-types", tags=["labels"], response_model=list[DefectTypeOut])
def defect_types(user: Operator, session: ReadSession) -> list[DefectTypeOut]:
    """Known defect types by name; the first nine have labelling keys 1-9."""
    return [
        DefectTypeOut(id=t.id, name=t.name, key=key) for t, key in labelling.defect_types(session)
    ]


# -- charts --------------------------------------------------------------------------------


class YieldPointOut(BaseModel):
    """Pass/fail counts of one hour or day."""

    model_config = ConfigDict(extra="forbid")
    start: dt.datetime
    n_pass: int
    n_fail: int
    yield_pct: float


class YieldOut(BaseModel):
    """First-pass yield over time."""

    model_config = ConfigDict(extra="forbid")
    bucket: str
    points: list[YieldPointOut]


class HistogramOut(BaseModel):
    """Score histogram split by operator verdict, with the threshold."""

    model_config = ConfigDict(extra="forbid")
    hi: float
    bins: int
    counts: dict[str, list[int]]
    threshold: float | None


class ParetoRowOut(BaseModel):
    """Detected regions of one defect type."""

    model_config = ConfigDict(extra="forbid")
    defect_type: str
    count: int


def _window(days: int) -> tuple[dt.datetime, dt.datetime]:
    until = dt.datetime.now(dt.UTC)
    return until - dt.timedelta(days=days), until


@router.get("/charts/yield", tags=["charts"], response_model=YieldOut)
def chart_yield(
    user: Operator, session: ReadSession, station_id: OptStation = None, days: Days = 7
) -> YieldOut:
    """First-pass yield per hour (up to 3 days) or per day."""
    since, until = _window(days)
    points, bucket = line_stats.yield_series(
        session, station_id=station_id, since=since, until=until
    )
    return YieldOut(
        bucket=bucket,
        points=[
            YieldPointOut(start=p.start, n_pass=p.n_pass, n_fail=p.n_fail, yield_pct=p.yield_pct)
            for p in points
        ],
    )


@router.get("/charts/scores", tags=["charts"], response_model=HistogramOut)
def chart_scores(
    user: Operator,
    session: ReadSession,
    station_id: OptStation = None,
    days: Days = 7,
    bins: Annotated[int, Query(ge=2, le=200)] = 40,
) -> HistogramOut:
    """Normalised-score histogram (OK / defect / unlabelled) and the station's threshold."""
    since, until = _window(days)
    hist = line_stats.score_histogram(
        session, station_id=station_id, since=since, until=until, bins=bins
    )
    threshold = (
        queue_reads.image_threshold(repo.get_station(session, station_id))
        if station_id is not None
        else None
    )
    return HistogramOut(hi=hist.hi, bins=hist.bins, counts=hist.counts, threshold=threshold)


@router.get("/charts/pareto", tags=["charts"], response_model=list[ParetoRowOut])
def chart_pareto(
    user: Operator, session: ReadSession, station_id: OptStation = None, days: Days = 7
) -> list[ParetoRowOut]:
    """Detected defect regions per type, most frequent first."""
    since, until = _window(days)
    rows = line_stats.defect_pareto(session, station_id=station_id, since=since, until=until)
    return [ParetoRowOut(defect_type=name, count=n) for name, n in rows]


# -- models and retraining -----------------------------------------------------------------


@router.get("/models", tags=["models"], response_model=list[ModelVersionOut])
def list_models(
    user: Operator, session: ReadSession, station_id: OptStation = None
) -> list[ModelVersionOut]:
    """Model versions newest first, with production statistics."""
    versions = models_service.model_versions(session, station_id=station_id)
    stats = models_service.model_inspection_stats(session, [v.id for v in versions])
    return [model_out(v, stats.get(v.id)) for v in versions]


def compare_rows(a: ModelVersionOut, b: ModelVersionOut) -> list[CompareRowOut]:
    """Metrics and production statistics of two versions side by side."""
    rows = []
    for section, left, right in (
        ("", a.metrics, b.metrics),
        ("production.", a.production, b.production),
    ):
        for key in sorted(set(left) | set(right)):
            va, vb = left.get(key), right.get(key)
            delta = None
            if (
                isinstance(va, int | float)
                and isinstance(vb, int | float)
                and not isinstance(va, bool)
                and not isinstance(vb, bool)
                and math.isfinite(va)
                and math.isfinite(vb)
            ):
                delta = float(vb) - float(va)
            rows.append(CompareRowOut(metric=section + key, a=va, b=vb, delta=delta))
    return rows


@router.get("/models/compare", tags=["models"], response_model=CompareOut, responses=NOT_FOUND)
def compare_models(
    user: Operator,
    session: ReadSession,
    a: Annotated[int, Query(ge=1, le=MAX_ID)],
    b: Annotated[int, Query(ge=1, le=MAX_ID)],
) -> CompareOut:
    """Two model versions side by side (``delta`` = b - a)."""
    va, vb = (
        models_service.get_model_version(session, a),
        models_service.get_model_version(session, b),
    )
    stats = models_service.model_inspection_stats(session, [va.id, vb.id])
    out_a, out_b = model_out(va, stats.get(va.id)), model_out(vb, stats.get(vb.id))
    return CompareOut(a=out_a, b=out_b, rows=compare_rows(out_a, out_b))


@router.get(
    "/models/{model_version_id}",
    tags=["models"],
    response_model=ModelVersionOut,
    responses=NOT_FOUND,
)
def get_model(model_version_id: IdPath, user: Operator, session: ReadSession) -> ModelVersionOut:
    """One model version."""
    version = models_service.get_model_version(session, model_version_id)
    stats = models_service.model_inspection_stats(session, [version.id])
    return model_out(version, stats.get(version.id))


@router.post(
    "/models/{model_version_id}/promote",
    tags=["models"],
    response_model=ModelVersionOut,
    responses={**NOT_FOUND, **CONFLICT},
)
def promote(model_version_id: IdPath, user: Engineer, session: WriteSession) -> ModelVersionOut:
    """Make the version its station's active model (engineer; the old one is retired)."""
    version = models_service.promote(
        session, model_version_id=model_version_id, actor=actor_of(user)
    )
    return model_out(version)


@router.post(
    "/stations/{station_id}/rollback",
    tags=["models"],
    response_model=ModelVersionOut,
    responses={**NOT_FOUND, **CONFLICT},
)
def rollback(
    station_id: IdPath,
    user: Engineer,
    session: WriteSession,
    body: Annotated[RollbackIn | None, Body()] = None,
) -> ModelVersionOut:
    """Reactivate the station's previous model (or ``to_version_id``) (engineer)."""
    version = models_service.rollback(
        session,
        station_id=station_id,
        actor=actor_of(user),
        to_version_id=body.to_version_id if body is not None else None,
    )
    return model_out(version)


@router.get("/retrain-jobs", tags=["retraining"], response_model=list[RetrainJobOut])
def list_jobs(
    user: Operator, session: ReadSession, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> list[RetrainJobOut]:
    """The newest retraining jobs."""
    return [RetrainJobOut.model_validate(j) for j in jobs.retrain_jobs(session, limit=limit)]


@router.post(
    "/retrain-jobs",
    tags=["retraining"],
    status_code=201,
    response_model=RetrainJobOut,
    responses=NOT_FOUND,
)
def create_job(body: RetrainJobIn, user: Engineer, session: WriteSession) -> RetrainJobOut:
    """Queue a retraining job for a station (engineer; audited)."""
    job = jobs.request_retraining(
        session,
        station_id=body.station_id,
        base_model_version_id=body.base_model_version_id,
        detector_type=body.detector_type,
        requested_by=user.id,
    )
    return RetrainJobOut.model_validate(job)


@router.post(
    "/retrain-jobs/{job_id}/cancel",
    tags=["retraining"],
    response_model=RetrainJobOut,
    responses=NOT_FOUND,
)
def cancel_job(job_id: IdPath, user: Engineer, session: WriteSession) -> RetrainJobOut:
    """Cancel a queued job, or ask a running one to stop (engineer; audited)."""
    return RetrainJobOut.model_validate(jobs.cancel(session, job_id=job_id, actor=actor_of(user)))


# -- users and audit -----------------------------------------------------------------------


@router.get("/users", tags=["users"], response_model=list[UserOut])
def list_users(user: Admin, session: ReadSession) -> list[UserOut]:
    """Every account (admin)."""
    return [UserOut.model_validate(u) for u in users.list_users(session)]


@router.post("/users", tags=["users"], status_code=201, response_model=UserOut, responses=CONFLICT)
def create_user(body: UserIn, user: Admin, session: WriteSession) -> UserOut:
    """Create an account (admin; audited; the password is stored as an argon2 hash)."""
    created = users.add_user(
        session,
        username=body.username,
        role=body.role,
        password=body.password,
        display_name=body.display_name,
        created_by=actor_of(user),
    )
    return UserOut.model_validate(created)


@router.patch(
    "/users/{user_id}",
    tags=["users"],
    response_model=UserOut,
    responses={**NOT_FOUND, **CONFLICT},
)
def update_user(user_id: IdPath, body: UserPatch, user: Admin, session: WriteSession) -> UserOut:
    """Change role, active flag, display name or password (admin; audited)."""
    changed = users.change_user(
        session,
        user_id=user_id,
        actor=actor_of(user),
        role=body.role,
        is_active=body.is_active,
        password=body.password,
        display_name=body.display_name,
    )
    return UserOut.model_validate(changed)


@router.get("/audit", tags=["audit"], response_model=AuditPageOut)
def audit(
    user: Engineer,
    session: ReadSession,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    entity_type: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=100)] = None,
) -> AuditPageOut:
    """The audit log newest first (engineer); page with ``before_id``."""
    rows = audit_service.audit_page(
        session, limit=limit, before_id=before_id, entity_type=entity_type, actor=actor
    )
    return AuditPageOut(
        items=[AuditOut.model_validate(r) for r in rows],
        next_before_id=rows[-1].id if len(rows) == limit else None,
    )
