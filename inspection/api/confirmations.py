"""The server's own confirmation step for the forms that change what the line does (promote,
roll back, save thresholds): a form posted without ``confirmed=yes`` changes nothing and gets a
page that names the change, with a button that posts it again confirmed. In the browser,
``static/js/confirm.js`` asks first (``window.confirm``) and adds the field, so with JavaScript
one confirmation is asked, and without it the server asks.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from inspection.api.deps import Ctx, Engineer
from inspection.db import repo
from inspection.services import models as models_service
from inspection.services import review_queue, thresholds

#: The form field (and value) that says the user has seen what the change does.
CONFIRM_FIELD = "confirmed"
CONFIRM_VALUE = "yes"
#: The preview window of the thresholds' confirmation (the station page's default).
PREVIEW_DAYS = 30


@dataclass(frozen=True)
class Change:
    """What a confirmation page shows: a title, the sentence naming the change, the form to
    post again (``action`` with ``fields``) and where Cancel goes."""

    title: str
    message: str
    action: str
    back: str
    button: str
    fields: dict[str, str]


def _fmt(value: float | None) -> str:
    return "not set" if value is None else f"{value:.3f}"


def _version(name: str, version_id: int) -> str:
    return f"{name} (#{version_id})"


def promote_change(session: Session, model_version_id: int) -> Change:
    """Promoting a version: which, on which station, and the version it replaces.

    Raises:
        NotFoundError: no such version.
    """
    version = models_service.get_model_version(session, model_version_id)
    station = repo.get_station(session, version.station_id) if version.station_id else None
    active = repo.get_active_model(session, version.station_id) if version.station_id else None
    replacing = f", replacing {_version(active.name, active.id)}" if active is not None else ""
    where = station.name if station is not None else "no station"
    return Change(
        title="Promote a model",
        message=(
            f"Promote {_version(version.name, version.id)} on station {where}: it becomes the "
            f"active model for new frames{replacing}."
        ),
        action=f"/models/{version.id}/promote",
        back="/models",
        button=f"Promote {version.name}",
        fields={},
    )


def rollback_change(session: Session, station_id: int) -> Change | None:
    """Rolling a station back: the version that goes and the one that comes back (None:
    nothing to roll back to).

    Raises:
        NotFoundError: no such station.
    """
    station = repo.get_station(session, station_id)
    back_to = next(iter(models_service.rollback_candidates(session, station_id=station_id)), None)
    if back_to is None:
        return None
    active = repo.get_active_model(session, station_id)
    going = _version(active.name, active.id) if active is not None else "the active model"
    return Change(
        title="Roll back a station",
        message=(
            f"Roll back station {station.name}: {going} is retired and "
            f"{_version(back_to.name, back_to.id)} becomes active for new frames."
        ),
        action=f"/stations/{station_id}/rollback",
        back="/models",
        button=f"Roll back to {back_to.name}",
        fields={},
    )


def thresholds_change(
    session: Session,
    station_id: int,
    *,
    image: float | None,
    pixel: float | None,
    form: dict[str, str],
) -> Change:
    """Saving thresholds: old and new values and how many past verdicts would flip.

    Raises:
        NotFoundError: no such station.
        ValueError: the image threshold is outside its range (refused before asking).
    """
    thresholds.check_image_threshold(image)
    station = repo.get_station(session, station_id)
    current = review_queue.image_threshold(station)
    parts: list[str] = []
    if image is None:
        parts.append(f"image threshold {_fmt(current)} → the station's own (file or model)")
    elif abs(image - current) > 1e-9:
        parts.append(f"image threshold {_fmt(current)} → {_fmt(image)}")
    if pixel != station.pixel_threshold:
        parts.append(f"pixel threshold {_fmt(station.pixel_threshold)} → {_fmt(pixel)}")
    message = f"Save the thresholds of {station.name}: "
    message += "; ".join(parts) if parts else "nothing changes"
    if image is not None and parts:
        since = dt.datetime.now(dt.UTC) - dt.timedelta(days=PREVIEW_DAYS)
        preview = thresholds.threshold_preview(
            session, station_id=station_id, proposed=image, since=since
        )
        message += (
            f". Over the last {PREVIEW_DAYS} days {preview.flips} of {preview.total} "
            f"inspections would change verdict ({preview.to_fail} pass → fail, "
            f"{preview.to_pass} fail → pass)"
        )
    return Change(
        title="Save thresholds",
        message=f"{message}. Stations apply it to new frames.",
        action=f"/stations/{station_id}/thresholds",
        back=f"/stations/{station_id}",
        button="Save thresholds",
        fields=form,
    )


@dataclass(frozen=True)
class AskFirst:
    """The confirmation step of one request: ``confirmed`` when the form carried
    ``confirmed=yes``; else :meth:`page` is the answer."""

    request: Request
    ctx: Any
    user: Any
    confirmed: bool

    def page(self, change: Change) -> HTMLResponse:
        """The page that names the change: Confirm posts it again confirmed, Cancel goes back."""
        from inspection.api.routes_ui import render  # routes_ui's routes use this module

        return render(
            self.request,
            self.ctx,
            "confirm.html",
            self.user,
            change=change,
            confirm_field=CONFIRM_FIELD,
            confirm_value=CONFIRM_VALUE,
            title=change.title,
        )


def _ask_first(
    request: Request,
    ctx: Ctx,
    user: Engineer,
    confirmed: Annotated[str, Form(max_length=8)] = "",
) -> AskFirst:
    return AskFirst(request, ctx, user, confirmed == CONFIRM_VALUE)


#: The dependency of the engineer's form routes that ask first (promote, roll back, thresholds).
Ask = Annotated[AskFirst, Depends(_ask_first)]
