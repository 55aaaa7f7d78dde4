"""The review queue's read model: what to review next, inspection lists and one inspection.

Reads only (the labelling rules are :mod:`inspection.services.labelling`). The queue's filters
are one :class:`QueueFilters` value, read by :func:`inspection.db.review.review_filters` for
its page and its count. Every query is
one SQL statement with a window, so the pages stay fast with hundreds of thousands of
inspections (``inspection bench ui`` measures them).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Select, func, literal, select, tuple_
from sqlalchemy.orm import Session, joinedload

from inspection.db import repo
from inspection.db.models import (
    Artifact,
    ArtifactKind,
    AuditLog,
    Inspection,
    ModelVersion,
    OperatorLabel,
    Station,
    UTCDateTime,
    Verdict,
)
from inspection.db.review import QueueFilters, inspection_view, review_filters, window_filters
from inspection.errors import NotFoundError

T = TypeVar("T")

#: Image threshold of a station that has none configured: the model's calibrated threshold,
#: which the normalised score puts at 0.5.
DEFAULT_IMAGE_THRESHOLD = 0.5
#: Where the threshold a station applies comes from (:func:`threshold_source`).
SOURCE_UI = "UI override"
SOURCE_CONFIG = "station config"
SOURCE_MODEL = "model calibration"
#: Scores this close to the threshold are "uncertain" in the queue.
UNCERTAIN_MARGIN = 0.1
#: The review floor of a station the floors do not name (:func:`review_floors`).
DEFAULT_REVIEW_FLOOR = DEFAULT_IMAGE_THRESHOLD - UNCERTAIN_MARGIN
QUEUE_COUNT_CAP = 10_000


def image_threshold(station: Station | None) -> float:
    """The image-level threshold ``station`` applies on the normalised score: the operators'
    (UI override), else its configuration file's, else the model's calibrated 0.5 (the same
    order as the station's own ``_apply_thresholds``)."""
    if station is None:
        return DEFAULT_IMAGE_THRESHOLD
    for value in (station.image_threshold, station.config_image_threshold):
        if value is not None:
            return float(value)
    return DEFAULT_IMAGE_THRESHOLD


def threshold_source(station: Station | None) -> str:
    """Where :func:`image_threshold` comes from: :data:`SOURCE_UI`, :data:`SOURCE_CONFIG` or
    :data:`SOURCE_MODEL`."""
    if station is not None and station.image_threshold is not None:
        return SOURCE_UI
    if station is not None and station.config_image_threshold is not None:
        return SOURCE_CONFIG
    return SOURCE_MODEL


def pixel_threshold(station: Station | None) -> float | None:
    """The heatmap threshold ``station`` applies: the operators', else its file's, else None
    (the model's own)."""
    if station is None:
        return None
    value = station.pixel_threshold
    return value if value is not None else station.config_pixel_threshold


def is_uncertain(score: float, threshold: float) -> bool:
    """Whether a normalised score is close enough to the threshold to need a second look."""
    return abs(score - threshold) < UNCERTAIN_MARGIN


def review_floors(stations: Mapping[int, Station]) -> dict[int, float]:
    """Per station, the score above which an unflagged part still needs a person: the start
    of the uncertain band below the threshold it applies (:func:`is_uncertain`)."""
    return {sid: image_threshold(s) - UNCERTAIN_MARGIN for sid, s in stations.items()}


def stations_by_id(session: Session) -> dict[int, Station]:
    """Every station, keyed by id (there are few; pages look them up per item)."""
    return {s.id: s for s in session.scalars(select(Station).order_by(Station.name))}


def first_artifact(inspection: Inspection, kind: ArtifactKind) -> Artifact | None:
    """The inspection's first artifact of ``kind`` (whole-frame, not a region crop), or None."""
    for artifact in inspection.artifacts:
        if artifact.kind == kind and artifact.region_id is None:
            return artifact
    return None


def _whole_frame_artifact(
    session: Session, inspection_id: int, kind: ArtifactKind
) -> Artifact | None:
    return session.scalar(
        select(Artifact)
        .where(
            Artifact.inspection_id == inspection_id,
            Artifact.kind == kind,
            Artifact.region_id.is_(None),
        )
        .order_by(Artifact.id)
        .limit(1)
    )


def image_artifact(session: Session, inspection_id: int, kind: ArtifactKind) -> Artifact:
    """The stored ``kind`` image of an inspection (whole-frame, not a region crop).

    Raises:
        NotFoundError: no such inspection, or it has no stored ``kind``.
    """
    artifact = _whole_frame_artifact(session, inspection_id, kind)
    if artifact is None:
        if session.get(Inspection, inspection_id) is None:
            raise NotFoundError(f"inspection {inspection_id} does not exist")
        raise NotFoundError(f"inspection {inspection_id} has no stored {kind.value}")
    return artifact


@dataclass(frozen=True)
class HeatmapSource:
    """What drawing an inspection's overlay needs: the stored heatmap, the frame's (width,
    height) when known, and the station's pixel threshold."""

    store_key: str
    frame_size: tuple[int, int] | None
    pixel_threshold: float | None


def heatmap_source(session: Session, inspection_id: int) -> HeatmapSource:
    """:class:`HeatmapSource` of an inspection (``NotFoundError`` as :func:`image_artifact`)."""
    heatmap = image_artifact(session, inspection_id, ArtifactKind.HEATMAP)
    frame = _whole_frame_artifact(session, inspection_id, ArtifactKind.FRAME)
    station = session.scalar(
        select(Station)
        .join(Inspection, Inspection.station_id == Station.id)
        .where(Inspection.id == inspection_id)
    )
    size = None
    if frame is not None and frame.width_px and frame.height_px:
        size = (frame.width_px, frame.height_px)
    return HeatmapSource(heatmap.store_key, size, pixel_threshold(station))


def latest_labels(session: Session, inspection_ids: Iterable[int]) -> dict[int, OperatorLabel]:
    """The newest label of each inspection (by anyone), with user and defect type loaded."""
    ids = sorted(set(inspection_ids))
    if not ids:
        return {}
    newest = (
        select(func.max(OperatorLabel.id))
        .where(OperatorLabel.inspection_id.in_(ids))
        .group_by(OperatorLabel.inspection_id)
    )
    rows = session.scalars(
        select(OperatorLabel)
        .where(OperatorLabel.id.in_(newest))
        .options(joinedload(OperatorLabel.user), joinedload(OperatorLabel.defect_type))
    )
    return {label.inspection_id: label for label in rows}


@dataclass(frozen=True)
class QueuePage:
    """One page of the review queue with what rendering it needs."""

    items: list[Inspection]
    next_cursor: str | None
    stations: dict[int, Station]
    labels: dict[int, OperatorLabel]


def queue_page(
    session: Session, queue: QueueFilters, *, limit: int = 50, cursor: str | None = None
) -> QueuePage:
    """What to review next: unknown defect types first, then by descending score.

    By default the parts the stations flagged plus the uncertain band just below each
    station's threshold (:func:`review_floors`), the same set the overview counts as "flagged,
    not reviewed"; ``queue.include_passes`` adds the clear passes. Keyset pagination through
    ``cursor`` (see :func:`inspection.db.review.review_queue`); ``labels`` holds the newest
    label of each item when ``queue.include_labelled``.
    """
    stations = stations_by_id(session)
    page = repo.review_queue(
        session,
        queue,
        review_floor=review_floors(stations),
        default_floor=DEFAULT_REVIEW_FLOOR,
        limit=limit,
        cursor=cursor,
    )
    labels = latest_labels(session, [i.id for i in page.items]) if queue.include_labelled else {}
    return QueuePage(page.items, page.next_cursor, stations, labels)


def queue_count(
    session: Session, queue: QueueFilters, *, cap: int = QUEUE_COUNT_CAP
) -> tuple[int, bool]:
    """How many inspections the review queue holds with these filters (by default flagged
    plus uncertain, as :func:`queue_page`), counting at most ``cap``.

    Returns ``(count, capped)``; ``capped`` is true when there are more than ``cap``.
    """
    filters = review_filters(
        session,
        queue,
        review_floor=None if queue.include_passes else review_floors(stations_by_id(session)),
        default_floor=DEFAULT_REVIEW_FLOOR,
    )
    if filters is None:
        return 0, False
    limited = select(Inspection.id).where(*filters).limit(cap + 1).subquery()
    count = int(session.scalar(select(func.count()).select_from(limited)) or 0)
    return min(count, cap), count > cap


def inspections_page(
    session: Session,
    *,
    station_id: int | None,
    verdict: Verdict | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    limit: int,
    offset: int,
) -> tuple[list[Inspection], int]:
    """One page of inspections newest first (regions with types and artifacts loaded) and
    the total count matching the filters."""
    filters = window_filters(station_id, since, until)
    if verdict is not None:
        filters.append(Inspection.verdict == verdict)
    items = list(
        session.scalars(
            select(Inspection)
            .where(*filters)
            .order_by(Inspection.captured_at.desc(), Inspection.id.desc())
            .limit(limit)
            .offset(offset)
            .options(*inspection_view())
        ).unique()
    )
    total = int(session.scalar(select(func.count()).select_from(Inspection).where(*filters)) or 0)
    return items, total


@dataclass(frozen=True)
class InspectionDetail:
    """One inspection with its station, every label, its labelling history and model."""

    inspection: Inspection
    station: Station | None
    labels: list[OperatorLabel]
    history: list[AuditLog]
    model_version: ModelVersion | None


def inspection_detail(session: Session, inspection_id: int) -> InspectionDetail:
    """Everything the detail page and ``GET /api/inspections/{id}`` show.

    Raises:
        NotFoundError: no such inspection.
    """
    inspection = repo.get_inspection(session, inspection_id)
    model = (
        session.get(ModelVersion, inspection.model_version_id)
        if inspection.model_version_id is not None
        else None
    )
    return InspectionDetail(
        inspection=inspection,
        station=session.get(Station, inspection.station_id),
        labels=label_rows(session, inspection_id=inspection_id),
        history=inspection_history(session, inspection_id=inspection_id),
        model_version=model,
    )


def _about_inspection(session: Session, inspection_id: int, stmt: Select[tuple[T]]) -> list[T]:
    """The rows ``stmt`` selects about an inspection (NotFoundError when there is no such
    inspection; an empty list only means none)."""
    repo.get_existing(session, Inspection, inspection_id, "inspection")
    return list(session.scalars(stmt))


def label_rows(session: Session, *, inspection_id: int) -> list[OperatorLabel]:
    """Every label of the inspection, oldest first, with user and defect type loaded.

    Raises:
        NotFoundError: no such inspection.
    """
    return _about_inspection(
        session,
        inspection_id,
        select(OperatorLabel)
        .where(OperatorLabel.inspection_id == inspection_id)
        .order_by(OperatorLabel.id)
        .options(joinedload(OperatorLabel.user), joinedload(OperatorLabel.defect_type)),
    )


def station_neighbours(session: Session, inspection: Inspection) -> tuple[int | None, int | None]:
    """Ids of the same station's previous and next inspection by capture time (index-backed)."""
    key = tuple_(Inspection.captured_at, Inspection.id)
    here = tuple_(literal(inspection.captured_at, UTCDateTime()), literal(inspection.id))
    same = Inspection.station_id == inspection.station_id
    previous = session.scalar(
        select(Inspection.id)
        .where(same, key < here)
        .order_by(Inspection.captured_at.desc(), Inspection.id.desc())
        .limit(1)
    )
    following = session.scalar(
        select(Inspection.id)
        .where(same, key > here)
        .order_by(Inspection.captured_at, Inspection.id)
        .limit(1)
    )
    return previous, following


def inspection_history(session: Session, *, inspection_id: int, limit: int = 200) -> list[AuditLog]:
    """Audit-log rows about the inspection (labels added and undone), newest first.

    Raises:
        NotFoundError: no such inspection.
    """
    return _about_inspection(
        session,
        inspection_id,
        select(AuditLog)
        .where(AuditLog.entity_type == "inspection", AuditLog.entity_id == str(inspection_id))
        .order_by(AuditLog.id.desc())
        .limit(limit),
    )
