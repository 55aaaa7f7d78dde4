"""The REST API's charts, model versions and retraining jobs, users and the audit log: parse
the request, call one service of :mod:`inspection.services`, render the response (see
:mod:`.routes_api`)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated

from fastapi import Body, Query
from pydantic import BaseModel, ConfigDict

from inspection.api.deps import (
    Admin,
    Engineer,
    Operator,
    ReadSession,
    WriteSession,
)
from inspection.api.routes_api import (
    CONFLICT,
    NOT_FOUND,
    Days,
    IdPath,
    OptStation,
    actor_of,
    api_router,
    tag_routers,
)
from inspection.api.schemas import (
    MAX_ID,
    AuditOut,
    AuditPageOut,
    CompareOut,
    CompareRowOut,
    ModelVersionOut,
    RetrainJobIn,
    RetrainJobOut,
    RollbackIn,
    UserIn,
    UserOut,
    UserPatch,
    model_out,
)
from inspection.db import repo
from inspection.services import audit as audit_service
from inspection.services import jobs, line_stats, users
from inspection.services import models as models_service
from inspection.services import review_queue as queue_reads

charts_api, models_api, retraining_api, users_api, audit_api = tag_routers(
    "charts", "models", "retraining", "users", "audit"
)


# -- charts --------------------------------------------------------------------------------


class YieldPointOut(BaseModel):
    """Pass/fail counts of one hour or day."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)
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


@charts_api.get("/charts/yield", response_model=YieldOut)
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
        points=[YieldPointOut.model_validate(p) for p in points],
    )


@charts_api.get("/charts/scores", response_model=HistogramOut)
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


@charts_api.get("/charts/pareto", response_model=list[ParetoRowOut])
def chart_pareto(
    user: Operator, session: ReadSession, station_id: OptStation = None, days: Days = 7
) -> list[ParetoRowOut]:
    """Detected defect regions per type, most frequent first."""
    since, until = _window(days)
    rows = line_stats.defect_pareto(session, station_id=station_id, since=since, until=until)
    return [ParetoRowOut(defect_type=name, count=n) for name, n in rows]


# -- models and retraining -----------------------------------------------------------------


@models_api.get("/models", response_model=list[ModelVersionOut])
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


@models_api.get("/models/compare", response_model=CompareOut, responses=NOT_FOUND)
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


@models_api.get("/models/{model_version_id}", response_model=ModelVersionOut, responses=NOT_FOUND)
def get_model(model_version_id: IdPath, user: Operator, session: ReadSession) -> ModelVersionOut:
    """One model version."""
    version = models_service.get_model_version(session, model_version_id)
    stats = models_service.model_inspection_stats(session, [version.id])
    return model_out(version, stats.get(version.id))


@models_api.post(
    "/models/{model_version_id}/promote",
    response_model=ModelVersionOut,
    responses={**NOT_FOUND, **CONFLICT},
)
def promote(model_version_id: IdPath, user: Engineer, session: WriteSession) -> ModelVersionOut:
    """Make the version its station's active model (engineer; the old one is retired)."""
    version = models_service.promote(
        session, model_version_id=model_version_id, actor=actor_of(user)
    )
    return model_out(version)


@models_api.post(
    "/stations/{station_id}/rollback",
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


@retraining_api.get("/retrain-jobs", response_model=list[RetrainJobOut])
def list_jobs(
    user: Operator, session: ReadSession, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> list[RetrainJobOut]:
    """The newest retraining jobs."""
    return [RetrainJobOut.model_validate(j) for j in jobs.retrain_jobs(session, limit=limit)]


@retraining_api.post(
    "/retrain-jobs", status_code=201, response_model=RetrainJobOut, responses=NOT_FOUND
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


@retraining_api.post(
    "/retrain-jobs/{job_id}/cancel", response_model=RetrainJobOut, responses=NOT_FOUND
)
def cancel_job(job_id: IdPath, user: Engineer, session: WriteSession) -> RetrainJobOut:
    """Cancel a queued job, or ask a running one to stop (engineer; audited)."""
    return RetrainJobOut.model_validate(jobs.cancel(session, job_id=job_id, actor=actor_of(user)))


# -- users and audit -----------------------------------------------------------------------


@users_api.get("/users", response_model=list[UserOut])
def list_users(user: Admin, session: ReadSession) -> list[UserOut]:
    """Every account (admin)."""
    return [UserOut.model_validate(u) for u in users.list_users(session)]


@users_api.post("/users", status_code=201, response_model=UserOut, responses=CONFLICT)
def create_user(body: UserIn, user: Admin, session: WriteSession) -> UserOut:
    """Create an account (admin; audited; the password is stored as an argon2 hash)."""
    created = users.add_account(session, body, created_by=actor_of(user))
    return UserOut.model_validate(created)


@users_api.patch("/users/{user_id}", response_model=UserOut, responses={**NOT_FOUND, **CONFLICT})
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


@audit_api.get("/audit", response_model=AuditPageOut)
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


router = api_router(charts_api, models_api, retraining_api, users_api, audit_api)
