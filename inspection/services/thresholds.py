"""A station's thresholds: change them (engineer, audited) and preview a change on past
inspections before saving it. Stations apply new thresholds to new frames without retraining.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import and_, case, exists, func, select
from sqlalchemy.orm import Session

from inspection.db import repo
from inspection.db.models import Inspection, OperatorLabel, Station, Verdict
from inspection.services.review_queue import image_threshold
from inspection.services.uow import unit_of_work

#: The image threshold applies to the normalised score, which stations clip to 0..1: the one
#: valid range of the API, the threshold form, its number field and its slider.
IMAGE_THRESHOLD_MIN = 0.0
IMAGE_THRESHOLD_MAX = 1.0


def check_image_threshold(value: float | None) -> None:
    """Refuse an image threshold outside the normalised score's range (None: not set).

    Raises:
        ValueError: outside [:data:`IMAGE_THRESHOLD_MIN`, :data:`IMAGE_THRESHOLD_MAX`].
    """
    if value is not None and not IMAGE_THRESHOLD_MIN <= value <= IMAGE_THRESHOLD_MAX:
        raise ValueError(
            f"image threshold must be between {IMAGE_THRESHOLD_MIN:g} and "
            f"{IMAGE_THRESHOLD_MAX:g} (the normalised score's range)"
        )


def set_thresholds(
    session: Session,
    *,
    station_id: int,
    image_threshold: float | None,
    pixel_threshold: float | None,
    actor: repo.Actor,
) -> Station:
    """Change a station's thresholds (audited by the repo); committed.

    Raises:
        NotFoundError: no such station.
        ValueError: the image threshold is outside
            [:data:`IMAGE_THRESHOLD_MIN`, :data:`IMAGE_THRESHOLD_MAX`].
    """
    check_image_threshold(image_threshold)
    with unit_of_work(session):
        return repo.set_station_thresholds(
            session,
            station_id=station_id,
            image_threshold=image_threshold,
            pixel_threshold=pixel_threshold,
            changed_by=actor,
        )


@dataclass(frozen=True)
class ThresholdPreview:
    """What changing a station's image threshold would have done to past inspections.

    ``to_fail``: stored passes the new threshold fails; ``to_pass``: stored fails it passes.
    ``confirmed``/``contradicted``: of those flips, how many operators' labels agree/disagree
    with the new verdict.
    """

    station_id: int
    current: float
    proposed: float
    since: dt.datetime
    total: int
    to_fail: int
    to_pass: int
    confirmed: int
    contradicted: int

    @property
    def flips(self) -> int:
        """Inspections whose verdict would change."""
        return self.to_fail + self.to_pass


def threshold_preview(
    session: Session, *, station_id: int, proposed: float, since: dt.datetime
) -> ThresholdPreview:
    """Count how many of the station's inspections since ``since`` would flip verdict at
    ``proposed`` (fail when ``norm_score >= threshold``)."""
    station = repo.get_station(session, station_id)
    new_fail = Inspection.norm_score >= proposed
    to_fail = and_(Inspection.verdict == Verdict.PASS, new_fail)
    to_pass = and_(Inspection.verdict == Verdict.FAIL, ~new_fail)
    said_fail = exists().where(
        OperatorLabel.inspection_id == Inspection.id, OperatorLabel.verdict == Verdict.FAIL
    )
    said_pass = exists().where(
        OperatorLabel.inspection_id == Inspection.id, OperatorLabel.verdict == Verdict.PASS
    )
    row = session.execute(
        select(
            func.count(),
            func.sum(case((to_fail, 1), else_=0)),
            func.sum(case((to_pass, 1), else_=0)),
            func.sum(case((and_(to_fail, said_fail), 1), (and_(to_pass, said_pass), 1), else_=0)),
            func.sum(case((and_(to_fail, said_pass), 1), (and_(to_pass, said_fail), 1), else_=0)),
        ).where(Inspection.station_id == station_id, Inspection.captured_at >= since)
    ).one()
    total, n_fail, n_pass, confirmed, contradicted = (int(v or 0) for v in row)
    return ThresholdPreview(
        station_id=station_id,
        current=image_threshold(station),
        proposed=proposed,
        since=since,
        total=total,
        to_fail=n_fail,
        to_pass=n_pass,
        confirmed=confirmed,
        contradicted=contradicted,
    )
