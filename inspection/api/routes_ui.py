"""Server-rendered pages of the operator UI (Jinja2 templates + the project's own JS/CSS).

Pages read through the same queries as the API; buttons that change things post HTML forms
(with the session's CSRF token) to the routes here, which call the same services and redirect
back with a one-shot message. Labelling on the review and detail pages goes through the JSON
API from ``static/js/review.js``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import secrets
from collections.abc import Callable
from typing import Annotated, Any, ParamSpec
from urllib.parse import quote, unquote, urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from inspection.api import charts, confirmations
from inspection.api.auth import CSRF_FORM_FIELD, SESSION_COOKIE
from inspection.api.confirmations import Ask
from inspection.api.deps import (
    Ctx,
    CurrentUser,
    Engineer,
    MaybeUser,
    Operator,
    ReadSession,
    WriteSession,
    client_address,
    end_login,
)
from inspection.api.routes_api import (
    Days,
    IdPath,
    OptStation,
    QueueQuery,
    actor_of,
)
from inspection.api.routes_api_inspections import inspection_detail
from inspection.api.schemas import (
    IMAGE_THRESHOLD_MAX,
    IMAGE_THRESHOLD_MIN,
    defect_type_out,
    inspection_out,
    station_out,
)
from inspection.db import repo
from inspection.db.models import Inspection, Role
from inspection.errors import InspectionError, LoginThrottledError, NotFoundError
from inspection.services import (
    labelling,
    line_stats,
    review_queue,
    sessions,
    thresholds,
)

router = APIRouter(include_in_schema=False)

FLASH_COOKIE = "inspection_flash"
LOGIN_CSRF_COOKIE = "inspection_login_csrf"
QUEUE_PAGE = 50


# -- helpers -------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    """A local path to go to after login (never another site: no ``//`` or scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def render(
    request: Request,
    ctx: Any,
    template: str,
    user: CurrentUser | None,
    *,
    status_code: int = 200,
    **values: Any,
) -> HTMLResponse:
    """Render ``template`` with the user, their CSRF token and any one-shot message."""
    flash = None
    raw = request.cookies.get(FLASH_COOKIE)
    if raw:
        try:
            data = json.loads(unquote(raw))
            if isinstance(data, dict):
                flash = {"kind": str(data.get("kind", "ok")), "text": str(data.get("text", ""))}
        except ValueError:
            flash = None
    response: HTMLResponse = ctx.templates.TemplateResponse(
        request,
        template,
        {
            "user": user,
            "csrf": user.csrf if user is not None else None,
            "csrf_field": CSRF_FORM_FIELD,
            "flash": flash,
            "Role": Role,
            **values,
        },
        status_code=status_code,
    )
    if raw:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def redirect(url: str, *, text: str | None = None, kind: str = "ok") -> RedirectResponse:
    """303 to ``url`` with an optional one-shot message shown on the next page."""
    response = RedirectResponse(url, status_code=303)
    if text:
        value = quote(json.dumps({"kind": kind, "text": text[:500]}))
        response.set_cookie(
            FLASH_COOKIE, value, max_age=60, path="/", httponly=True, samesite="lax"
        )
    return response


P = ParamSpec("P")


def redirect_errors(
    back: str,
    errors: tuple[type[Exception], ...] = (InspectionError,),
    message: Callable[[Exception], str] = str,
) -> Callable[[Callable[P, Response]], Callable[P, Response]]:
    """A form post's handler whose refusals (``errors``) redirect to ``back`` (formatted with
    the path parameters, e.g. ``/stations/{station_id}``) with ``message(exc)`` as an error
    message; the handler itself only says what happens when it succeeds."""

    def decorate(handler: Callable[P, Response]) -> Callable[P, Response]:
        @functools.wraps(handler)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> Response:
            try:
                return handler(*args, **kwargs)
            except errors as exc:
                return redirect(back.format(**kwargs), text=message(exc), kind="error")

        return guarded

    return decorate


def _set_login_csrf(response: Response, token: str, *, secure: bool) -> None:
    """The login form's CSRF cookie (strict, only sent to /login; Secure behind HTTPS)."""
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=3600,
        path="/login",
        httponly=True,
        samesite="strict",
        secure=secure,
    )


def _defect_types(session: Session) -> list[dict[str, Any]]:
    return [defect_type_out(t, keys).model_dump() for t, keys in labelling.defect_types(session)]


def _legend(types: list[dict[str, Any]], station_id: int | None) -> list[tuple[int, str]]:
    """The key legend of one station as (key, type name), by key (its JavaScript redraws it
    for each item's station)."""
    keyed = ((t["keys"].get(station_id), t["name"]) for t in types)
    return sorted((key, name) for key, name in keyed if key is not None)


def _window_days(days: int) -> tuple[dt.datetime, dt.datetime]:
    until = dt.datetime.now(dt.UTC)
    return until - dt.timedelta(days=days), until


# -- login ---------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_page(
    request: Request,
    ctx: Ctx,
    user: MaybeUser,
    next: Annotated[str | None, Query(max_length=2000)] = None,
) -> Response:
    """The login form (already logged-in users go straight on)."""
    if user is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    token = secrets.token_urlsafe(24)
    response = render(
        request, ctx, "login.html", None, next=_safe_next(next), login_csrf=token, title="Log in"
    )
    _set_login_csrf(response, token, secure=ctx.settings.cookie_secure)
    return response


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    ctx: Ctx,
    session: WriteSession,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    login_csrf: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    """Check the password, start a session (signed cookie) and go to ``next``."""
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    error = None
    status = 401
    if not expected or not secrets.compare_digest(expected, login_csrf):
        error, status = "Your login form expired; please try again.", 403
    else:
        try:
            found = sessions.login(
                session,
                ctx.throttle,
                username=username.strip(),
                password=password,
                address=client_address(request),
            )
        except sessions.InvalidCredentialsError:
            error = "Wrong username or password, or the account is deactivated."
        except LoginThrottledError as exc:
            error, status = (
                f"Too many failed attempts. Try again in {exc.retry_after_s:.0f} s.",
                429,
            )
        else:
            cookie, _csrf = ctx.signer.new_session(found)
            done = RedirectResponse(_safe_next(next), status_code=303)
            done.set_cookie(
                SESSION_COOKIE,
                cookie,
                max_age=ctx.settings.session_max_age_s,
                path="/",
                httponly=True,
                samesite="lax",
                secure=ctx.settings.cookie_secure,
            )
            done.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
            return done
    token = secrets.token_urlsafe(24)
    response = render(
        request,
        ctx,
        "login.html",
        None,
        status_code=status,
        next=_safe_next(next),
        login_csrf=token,
        error=error,
        username=username,
        title="Log in",
    )
    _set_login_csrf(response, token, secure=ctx.settings.cookie_secure)
    return response


@router.post("/logout")
def logout(ctx: Ctx, user: Operator, session: WriteSession) -> Response:
    """End the session on the server (its cookie gets 401 from now on; audited)."""
    end_login(ctx, session, user)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# -- line overview -------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, ctx: Ctx, user: Operator, session: ReadSession) -> Response:
    """Each station's newest frames, pass/fail counts, throughput and health."""
    summaries = line_stats.station_summaries(
        session, offline_after_s=ctx.settings.station_offline_after_s
    )
    totals = {
        "pass": sum(s.n_pass for s in summaries),
        "fail": sum(s.n_fail for s in summaries),
        "per_minute": sum(s.per_minute for s in summaries),
        "to_review": sum(s.to_review for s in summaries),
    }
    return render(
        request,
        ctx,
        "overview.html",
        user,
        summaries=summaries,
        totals=totals,
        now=dt.datetime.now(dt.UTC),
        nav="overview",
        title="Line overview",
    )


# -- review queue and detail ---------------------------------------------------------------


@router.get("/review", response_class=HTMLResponse)
def review(
    request: Request,
    ctx: Ctx,
    user: Operator,
    session: ReadSession,
    queue: QueueQuery,
) -> Response:
    """The review queue with one-key labelling (see the page's ``?`` help): flagged and
    uncertain parts; passes only with ``include_passes``."""
    page = review_queue.queue_page(session, queue, limit=QUEUE_PAGE)
    stations = page.stations
    items = [
        inspection_out(i, stations.get(i.station_id), page.labels.get(i.id)).model_dump(mode="json")
        for i in page.items
    ]
    since, until = queue.since, queue.until
    filters = {
        **dataclasses.asdict(queue),
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
    }
    query = urlencode({k: v for k, v in filters.items() if v not in (None, False)})
    types = _defect_types(session)
    data = {
        "items": items,
        "next_cursor": page.next_cursor,
        "query": query,
        "defect_types": types,
        "user": {"username": user.username, "role": user.role.value},
    }
    first = items[0] if items else None
    return render(
        request,
        ctx,
        "review.html",
        user,
        data=data,
        legend=_legend(types, first["station_id"] if first else queue.station_id),
        legend_station=first["station"] if first else "",
        stations=list(stations.values()),
        filters=filters,
        since_value=since.strftime("%Y-%m-%dT%H:%M") if since else "",
        until_value=until.strftime("%Y-%m-%dT%H:%M") if until else "",
        nav="review",
        title="Review queue",
    )


@router.get("/inspections/{inspection_id}", response_class=HTMLResponse)
def detail(
    inspection_id: IdPath, request: Request, ctx: Ctx, user: Operator, session: ReadSession
) -> Response:
    """One inspection: image with heatmap overlay and outlines, score, labels and history."""
    data = inspection_detail(session, inspection_id)
    current = session.get(Inspection, inspection_id)
    if current is None:  # deleted between the two reads
        raise NotFoundError(f"inspection {inspection_id} does not exist")
    prev_id, next_id = review_queue.station_neighbours(session, current)
    types = _defect_types(session)
    payload = {
        "item": data.model_dump(mode="json"),
        "defect_types": types,
        "prev_id": prev_id,
        "next_id": next_id,
    }
    return render(
        request,
        ctx,
        "detail.html",
        user,
        item=data,
        data=payload,
        legend=_legend(types, data.station_id),
        legend_station=data.station,
        prev_id=prev_id,
        next_id=next_id,
        nav="review",
        title=f"Inspection {inspection_id}",
    )


# -- charts --------------------------------------------------------------------------------


@router.get("/charts", response_class=HTMLResponse)
def charts_page(
    request: Request,
    ctx: Ctx,
    user: Operator,
    session: ReadSession,
    station_id: OptStation = None,
    days: Days = 7,
) -> Response:
    """Yield over time, score histogram with the threshold, defect Pareto."""
    since, until = _window_days(days)
    stations = review_queue.stations_by_id(session)
    station = stations.get(station_id) if station_id is not None else None
    if station_id is not None and station is None:
        repo.get_station(session, station_id)  # raises NotFoundError -> 404
    points, bucket = line_stats.yield_series(
        session, station_id=station_id, since=since, until=until
    )
    hist = line_stats.score_histogram(session, station_id=station_id, since=since, until=until)
    pareto = line_stats.defect_pareto(session, station_id=station_id, since=since, until=until)
    threshold = review_queue.image_threshold(station)
    n_pass = sum(p.n_pass for p in points)
    n_fail = sum(p.n_fail for p in points)
    return render(
        request,
        ctx,
        "charts.html",
        user,
        stations=list(stations.values()),
        station=station,
        station_id=station_id,
        days=days,
        yield_svg=charts.yield_chart(points, bucket, width=1160, height=280),
        hist_svg=charts.histogram_chart(hist, threshold, width=560, height=260),
        pareto_svg=charts.pareto_chart(pareto, width=560, height=260),
        pareto=pareto,
        n_pass=n_pass,
        n_fail=n_fail,
        threshold=threshold,
        nav="charts",
        title="Charts",
    )


# -- stations and thresholds ---------------------------------------------------------------


@router.get("/stations", response_class=HTMLResponse)
def stations_page(request: Request, ctx: Ctx, user: Operator, session: ReadSession) -> Response:
    """Every station with its thresholds."""
    stations = list(review_queue.stations_by_id(session).values())
    return render(
        request,
        ctx,
        "stations.html",
        user,
        stations=[station_out(s) for s in stations],
        nav="stations",
        title="Stations",
    )


@router.get("/stations/{station_id}", response_class=HTMLResponse)
def station_page(
    station_id: IdPath,
    request: Request,
    ctx: Ctx,
    user: Operator,
    session: ReadSession,
    days: Days = 30,
) -> Response:
    """A station's thresholds with a live preview of how many past verdicts would flip."""
    station = repo.get_station(session, station_id)
    since, until = _window_days(days)
    threshold = review_queue.image_threshold(station)
    hist = line_stats.score_histogram(session, station_id=station_id, since=since, until=until)
    preview = thresholds.threshold_preview(
        session, station_id=station_id, proposed=threshold, since=since
    )
    return render(
        request,
        ctx,
        "station.html",
        user,
        station=station_out(station),
        hist_svg=charts.histogram_chart(hist, threshold, width=1160, height=300),
        preview=preview,
        days=days,
        can_edit=user.allows(Role.ENGINEER),
        threshold_min=IMAGE_THRESHOLD_MIN,
        threshold_max=IMAGE_THRESHOLD_MAX,
        nav="stations",
        title=f"Station {station.name}",
    )


def _optional_float(value: str, name: str) -> float | None:
    value = value.strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {value!r}") from exc
    if not 0.0 <= number <= 1e6:  # also rejects NaN
        raise ValueError(f"{name} must be between 0 and 1e6")
    return number


@router.post("/stations/{station_id}/thresholds")
@redirect_errors("/stations/{station_id}", (ValueError, InspectionError))
def save_thresholds(
    station_id: IdPath,
    user: Engineer,
    session: WriteSession,
    ask: Ask,
    image_threshold: Annotated[str, Form(max_length=32)] = "",
    pixel_threshold: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    """Save new thresholds (engineer; audited; unconfirmed: a page that names the change)."""
    image = _optional_float(image_threshold, "image threshold")
    pixel = _optional_float(pixel_threshold, "pixel threshold")
    if not ask.confirmed:
        form = {"image_threshold": image_threshold, "pixel_threshold": pixel_threshold}
        return ask.page(
            confirmations.thresholds_change(
                session, station_id, image=image, pixel=pixel, form=form
            )
        )
    thresholds.set_thresholds(
        session,
        station_id=station_id,
        image_threshold=image,
        pixel_threshold=pixel,
        actor=actor_of(user),
    )
    return redirect(
        f"/stations/{station_id}", text="Thresholds saved; stations apply them to new frames."
    )
