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
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict

from inspection.api.deps import (
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
    ErrorOut,
    MeOut,
    ModelBriefOut,
    StationOut,
    StationSummaryOut,
    ThresholdPreviewOut,
    ThresholdsIn,
    TokenOut,
    TokenRequest,
    me_out,
    station_out,
    station_summary_out,
)
from inspection.db import repo
from inspection.db.engine import check_schema_at_head
from inspection.db.models import (
    ModelVersion,
)
from inspection.db.review import QueueFilters
from inspection.services import line_stats, sessions, thresholds
from inspection.services import review_queue as queue_reads

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

IncludeLabelled = Annotated[
    bool, Query(description="Also list inspections that already have a label.")
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


def tag_routers(*tags: str) -> tuple[APIRouter, ...]:
    """One ``/api`` router per tag of the API docs, so that a route declares no ``tags`` of its
    own; :func:`api_router` joins them. The prefix sits here, on the routers the routes are
    declared on, so that every route's own ``path`` is its full template: FastAPI keeps
    included routers nested, and the request metrics label requests by the matched route's
    ``path`` (``/api/stations``, not ``/stations``)."""
    return tuple(APIRouter(prefix="/api", tags=[tag]) for tag in tags)


def api_router(*groups: APIRouter) -> APIRouter:
    """A module's API router: the routes of ``groups`` in this order (the order of the API
    docs), each with the common error responses."""
    router = APIRouter(responses=ERRORS)
    for group in groups:
        router.include_router(group)
    return router


health_api, auth_api, stations_api = tag_routers("health", "auth", "stations")


def aware(value: dt.datetime | None) -> dt.datetime | None:
    """``value`` as an aware datetime; naive values are taken to be UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def queue_filters(
    station_id: OptStation = None,
    since: Since = None,
    until: Until = None,
    min_score: MinScore = None,
    defect_type: TypeName = None,
    include_labelled: IncludeLabelled = False,
    include_passes: IncludePasses = False,
) -> QueueFilters:
    """The review queue's filters from the query string (the API's queue and the review page
    read the same parameters)."""
    return QueueFilters(
        station_id,
        aware(since),
        aware(until),
        min_score,
        defect_type,
        include_labelled,
        include_passes,
    )


QueueQuery = Annotated[QueueFilters, Depends(queue_filters)]


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


@health_api.get("/health", response_model=HealthOut)
def health() -> HealthOut:
    """Liveness (anonymous): ``ok`` while the process serves requests.

    Touches no database, so an orchestrator does not restart healthy servers during a database
    outage; whether requests can be served is ``/api/ready``.
    """
    return HealthOut(status="ok")


@health_api.get("/ready", response_model=ReadyOut)
def ready(ctx: Ctx) -> ReadyOut:
    """Readiness (anonymous): ``ready`` when the database answers and its schema is at head.

    503 (with the reason) while the database is unreachable or its schema is behind or ahead
    of this code; load balancers stop sending requests until it answers 200 again.
    """
    revision = check_schema_at_head(ctx.engine)
    return ReadyOut(status="ready", schema_revision=revision)


@auth_api.post(
    "/auth/token",
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


@auth_api.get("/auth/me", response_model=MeOut)
def me(user: AnyUser) -> MeOut:
    """Who the credentials belong to."""
    return me_out(user)


# -- stations and overview -----------------------------------------------------------------


@stations_api.get("/stations", response_model=list[StationOut])
def list_stations(user: Operator, session: ReadSession) -> list[StationOut]:
    """Every station with its thresholds."""
    return [station_out(s) for s in queue_reads.stations_by_id(session).values()]


@stations_api.get("/stations/{station_id}", response_model=StationOut, responses=NOT_FOUND)
def get_station(station_id: IdPath, user: Operator, session: ReadSession) -> StationOut:
    """One station."""
    return station_out(repo.get_station(session, station_id))


@stations_api.put(
    "/stations/{station_id}/thresholds", response_model=StationOut, responses=NOT_FOUND
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


@stations_api.get(
    "/stations/{station_id}/threshold-preview",
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


@stations_api.get("/overview", response_model=list[StationSummaryOut])
def overview(user: Operator, ctx: Ctx, session: ReadSession) -> list[StationSummaryOut]:
    """The line overview: every station's last 24 h, throughput and newest inspections."""
    summaries = line_stats.station_summaries(
        session, offline_after_s=ctx.settings.station_offline_after_s
    )
    return [station_summary_out(s) for s in summaries]


def model_brief(version: ModelVersion | None) -> ModelBriefOut | None:
    if version is None:
        return None
    return ModelBriefOut.model_validate(version)


router = api_router(health_api, auth_api, stations_api)
