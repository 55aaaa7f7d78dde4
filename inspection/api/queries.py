"""Read models and small writes the review app needs that :mod:`inspection.db.repo` lacks.

Same conventions as the repo: a :class:`~sqlalchemy.orm.Session` first, keyword arguments
after, nothing commits. Candidates to move into the repo later: :func:`latest_labels`,
:func:`undo_last_label`, :func:`queue_count`, :func:`threshold_preview`, the chart aggregates
and :func:`station_summaries`.

Every aggregate is one SQL statement with a time window, so the pages stay fast with hundreds
of thousands of inspections (``inspection bench ui`` measures them).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    String,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    select,
    tuple_,
)
from sqlalchemy.orm import Session, selectinload

from inspection.db import repo
from inspection.db.models import (
    Artifact,
    ArtifactKind,
    AuditLog,
    DefectRegion,
    DefectType,
    Inspection,
    ModelStatus,
    ModelVersion,
    OperatorLabel,
    RetrainJob,
    Station,
    User,
    UTCDateTime,
    Verdict,
    utcnow,
)
from inspection.db.review import review_filters
from inspection.errors import NotFoundError

log = logging.getLogger(__name__)

#: Image threshold of a station that has none configured (normalised scores: 0.5).
DEFAULT_IMAGE_THRESHOLD = 0.5
#: Scores this close to the threshold are "uncertain" in the queue.
UNCERTAIN_MARGIN = 0.1
QUEUE_COUNT_CAP = 10_000


def image_threshold(station: Station | None) -> float:
    """The image-level threshold of ``station`` on the normalised score."""
    if station is None or station.image_threshold is None:
        return DEFAULT_IMAGE_THRESHOLD
    return float(station.image_threshold)


def is_uncertain(score: float, threshold: float) -> bool:
    """Whether a normalised score is close enough to the threshold to need a second look."""
    return abs(score - threshold) < UNCERTAIN_MARGIN


def stations_by_id(session: Session) -> dict[int, Station]:
    """Every station, keyed by id (there are few; pages look them up per item)."""
    return {s.id: s for s in session.scalars(select(Station).order_by(Station.name))}


def first_artifact(inspection: Inspection, kind: ArtifactKind) -> Artifact | None:
    """The inspection's first artifact of ``kind`` (whole-frame, not a region crop), or None."""
    for artifact in inspection.artifacts:
        if artifact.kind == kind and artifact.region_id is None:
            return artifact
    return None


# -- labels --------------------------------------------------------------------------------


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
        .options(selectinload(OperatorLabel.user), selectinload(OperatorLabel.defect_type))
    )
    return {label.inspection_id: label for label in rows}


def label_snapshot(label: OperatorLabel) -> dict[str, Any]:
    """A JSON-serialisable description of a label, for the audit log."""
    return {
        "label_id": label.id,
        "user_id": label.user_id,
        "verdict": label.verdict.value,
        "defect_type": label.defect_type.name if label.defect_type is not None else None,
        "note": label.note,
    }


def add_label_audited(
    session: Session,
    *,
    inspection_id: int,
    user: User,
    verdict: Verdict,
    defect_type: str | None,
    note: str | None,
) -> OperatorLabel:
    """:func:`repo.add_label` plus an audit-log row ``label.add`` on the inspection."""
    label = repo.add_label(
        session,
        inspection_id=inspection_id,
        user_id=user.id,
        verdict=verdict,
        defect_type=defect_type,
        note=note,
    )
    session.refresh(label, ["defect_type"])
    repo.write_audit(
        session,
        actor=repo.Actor(name=user.username, user_id=user.id),
        action="label.add",
        entity_type="inspection",
        entity_id=inspection_id,
        after=label_snapshot(label),
    )
    return label


def undo_last_label(session: Session, *, inspection_id: int, user: User) -> dict[str, Any]:
    """Remove ``user``'s newest label of the inspection (the operator's undo) and audit it.

    Labels are otherwise never changed; an undo deletes the row so the inspection returns to
    the review queue, and the audit log keeps what was undone (``label.undo``, ``before``).

    Raises:
        NotFoundError: the inspection does not exist or the user has no label on it.
    """
    label = session.scalar(
        select(OperatorLabel)
        .where(OperatorLabel.inspection_id == inspection_id, OperatorLabel.user_id == user.id)
        .order_by(OperatorLabel.id.desc())
        .limit(1)
        .options(selectinload(OperatorLabel.defect_type))
    )
    if label is None:
        if session.get(Inspection, inspection_id) is None:
            raise NotFoundError(f"inspection {inspection_id} does not exist")
        raise NotFoundError(f"you have no label on inspection {inspection_id} to undo")
    snapshot = label_snapshot(label)
    session.delete(label)
    repo.write_audit(
        session,
        actor=repo.Actor(name=user.username, user_id=user.id),
        action="label.undo",
        entity_type="inspection",
        entity_id=inspection_id,
        before=snapshot,
    )
    session.flush()
    return snapshot


def label_rows(session: Session, *, inspection_id: int) -> list[OperatorLabel]:
    """Every label of the inspection, oldest first, with user and defect type loaded."""
    return list(
        session.scalars(
            select(OperatorLabel)
            .where(OperatorLabel.inspection_id == inspection_id)
            .order_by(OperatorLabel.id)
            .options(selectinload(OperatorLabel.user), selectinload(OperatorLabel.defect_type))
        )
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
    """Audit-log rows about the inspection (labels added and undone), newest first."""
    return list(
        session.scalars(
            select(AuditLog)
            .where(AuditLog.entity_type == "inspection", AuditLog.entity_id == str(inspection_id))
            .order_by(AuditLog.id.desc())
            .limit(limit)
        )
    )


# -- review queue --------------------------------------------------------------------------


def queue_count(
    session: Session,
    *,
    station_id: int | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    min_score: float | None = None,
    defect_type: str | None = None,
    unlabelled_only: bool = True,
    cap: int = QUEUE_COUNT_CAP,
) -> tuple[int, bool]:
    """How many inspections the review queue holds with these filters, counting at most ``cap``.

    Returns ``(count, capped)``; ``capped`` is true when there are more than ``cap``.
    """
    filters = review_filters(
        session,
        station_id=station_id,
        since=since,
        until=until,
        min_score=min_score,
        defect_type=defect_type,
        unlabelled_only=unlabelled_only,
    )
    if filters is None:
        return 0, False
    limited = select(Inspection.id).where(*filters).limit(cap + 1).subquery()
    count = int(session.scalar(select(func.count()).select_from(limited)) or 0)
    return min(count, cap), count > cap


# -- inspections list ----------------------------------------------------------------------


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
    filters = _window(station_id, since, until)
    if verdict is not None:
        filters.append(Inspection.verdict == verdict)
    items = list(
        session.scalars(
            select(Inspection)
            .where(*filters)
            .order_by(Inspection.captured_at.desc(), Inspection.id.desc())
            .limit(limit)
            .offset(offset)
            .options(
                selectinload(Inspection.regions).selectinload(DefectRegion.defect_type),
                selectinload(Inspection.artifacts),
            )
        )
    )
    total = int(session.scalar(select(func.count()).select_from(Inspection).where(*filters)) or 0)
    return items, total


# -- line overview -------------------------------------------------------------------------


@dataclass
class StationSummary:
    """What the line overview shows for one station (counts over the last 24 h)."""

    station: Station
    threshold: float
    n_pass: int = 0
    n_fail: int = 0
    last_hour: int = 0
    mean_latency_ms: float | None = None
    last_at: dt.datetime | None = None
    to_review: int = 0
    active_model: ModelVersion | None = None
    latest: list[Inspection] = field(default_factory=list)
    health: str = "no data"

    @property
    def total(self) -> int:
        """Inspections in the last 24 h."""
        return self.n_pass + self.n_fail

    @property
    def yield_pct(self) -> float | None:
        """Share of passes in the last 24 h, in percent (None without inspections)."""
        return 100.0 * self.n_pass / self.total if self.total else None

    @property
    def per_minute(self) -> float:
        """Throughput over the last hour, in inspections per minute."""
        return self.last_hour / 60.0


def station_summaries(
    session: Session,
    *,
    now: dt.datetime | None = None,
    latest_n: int = 6,
    offline_after_s: float = 300.0,
) -> list[StationSummary]:
    """Per-station pass/fail counts (24 h), throughput (1 h), health and newest frames.

    ``health``: ``ok`` (an inspection within ``offline_after_s``), ``idle`` (within a day),
    ``offline`` (older) or ``no data``.
    """
    now = now or utcnow()
    day_ago = now - dt.timedelta(hours=24)
    hour_ago = now - dt.timedelta(hours=1)
    stations = stations_by_id(session)
    summaries = {
        sid: StationSummary(station=s, threshold=image_threshold(s)) for sid, s in stations.items()
    }
    counts = session.execute(
        select(Inspection.station_id, Inspection.verdict, func.count())
        .where(Inspection.captured_at >= day_ago)
        .group_by(Inspection.station_id, Inspection.verdict)
    ).tuples()
    for station_id, verdict, n in counts:
        summary = summaries.get(station_id)
        if summary is None:
            continue
        if verdict == Verdict.PASS:
            summary.n_pass = int(n)
        else:
            summary.n_fail = int(n)
    hourly = session.execute(
        select(Inspection.station_id, func.count(), func.avg(Inspection.latency_ms))
        .where(Inspection.captured_at >= hour_ago)
        .group_by(Inspection.station_id)
    ).tuples()
    for station_id, n, latency in hourly:
        if station_id in summaries:
            summaries[station_id].last_hour = int(n)
            summaries[station_id].mean_latency_ms = float(latency) if latency is not None else None
    review = session.execute(
        select(Inspection.station_id, func.count())
        .where(
            Inspection.captured_at >= day_ago,
            Inspection.verdict == Verdict.FAIL,
            ~exists().where(OperatorLabel.inspection_id == Inspection.id),
        )
        .group_by(Inspection.station_id)
    ).tuples()
    for station_id, n in review:
        if station_id in summaries:
            summaries[station_id].to_review = int(n)
    for version in session.scalars(
        select(ModelVersion).where(ModelVersion.status == ModelStatus.ACTIVE)
    ):
        if version.station_id in summaries:
            summaries[version.station_id].active_model = version
    for station_id, summary in summaries.items():
        summary.latest = list(
            session.scalars(
                select(Inspection)
                .where(Inspection.station_id == station_id)
                .order_by(Inspection.captured_at.desc(), Inspection.id.desc())
                .limit(latest_n)
            )
        )
        if summary.latest:
            summary.last_at = summary.latest[0].captured_at
            age = (now - summary.last_at).total_seconds()
            summary.health = (
                "ok" if age <= offline_after_s else "idle" if age <= 86_400 else "offline"
            )
    return list(summaries.values())


# -- charts --------------------------------------------------------------------------------


def _bucket_expr(session: Session, hourly: bool) -> ColumnElement[str]:
    """SQL text of the UTC hour or day a capture falls in (``YYYY-MM-DD HH`` / ``YYYY-MM-DD``)."""
    if session.get_bind().dialect.name == "postgresql":
        fmt = "YYYY-MM-DD HH24" if hourly else "YYYY-MM-DD"
        return func.to_char(func.timezone("UTC", Inspection.captured_at), fmt, type_=String)
    fmt = "%Y-%m-%d %H" if hourly else "%Y-%m-%d"
    return func.strftime(fmt, Inspection.captured_at, type_=String)


def _window(
    station_id: int | None, since: dt.datetime | None, until: dt.datetime | None
) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = []
    if station_id is not None:
        filters.append(Inspection.station_id == station_id)
    if since is not None:
        filters.append(Inspection.captured_at >= since)
    if until is not None:
        filters.append(Inspection.captured_at < until)
    return filters


@dataclass(frozen=True)
class YieldPoint:
    """Pass/fail counts of one time bucket (``start``: its beginning, UTC)."""

    start: dt.datetime
    n_pass: int
    n_fail: int

    @property
    def yield_pct(self) -> float:
        """Share of passes in percent."""
        total = self.n_pass + self.n_fail
        return 100.0 * self.n_pass / total if total else 0.0


def yield_series(
    session: Session,
    *,
    station_id: int | None,
    since: dt.datetime,
    until: dt.datetime,
) -> tuple[list[YieldPoint], str]:
    """First-pass yield (stored verdicts) per hour or per day.

    Hourly when the inspections in the window span at most 3 days, daily otherwise. Returns
    the points, oldest first, and the bucket size (``"hour"`` or ``"day"``).
    """
    first, last = session.execute(
        select(func.min(Inspection.captured_at), func.max(Inspection.captured_at)).where(
            *_window(station_id, since, until)
        )
    ).one()
    if first is None or last is None:
        return [], "hour"
    hourly = (last - first) <= dt.timedelta(days=3)
    bucket = _bucket_expr(session, hourly).label("bucket")
    rows = session.execute(
        select(
            bucket,
            func.sum(case((Inspection.verdict == Verdict.PASS, 1), else_=0)),
            func.sum(case((Inspection.verdict == Verdict.FAIL, 1), else_=0)),
        )
        .where(*_window(station_id, since, until))
        .group_by(bucket)
        .order_by(bucket)
    ).tuples()
    fmt = "%Y-%m-%d %H" if hourly else "%Y-%m-%d"
    points = [
        YieldPoint(
            start=dt.datetime.strptime(text, fmt).replace(tzinfo=dt.UTC),
            n_pass=int(n_pass or 0),
            n_fail=int(n_fail or 0),
        )
        for text, n_pass, n_fail in rows
        if text
    ]
    return points, "hour" if hourly else "day"


@dataclass(frozen=True)
class Histogram:
    """Normalised-score histogram: ``bins`` equal bins over ``[0, hi)`` (higher scores land in
    the last bin), split by what operators said: ``ok``, ``defect`` or ``unlabelled``."""

    hi: float
    bins: int
    counts: dict[str, list[int]]

    @property
    def width(self) -> float:
        """Width of one bin in score units."""
        return self.hi / self.bins


def score_histogram(
    session: Session,
    *,
    station_id: int | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    bins: int = 40,
    hi: float = 1.0,
) -> Histogram:
    """Counts of normalised scores per bin and operator verdict (labels: any label by anyone;
    a "defect" label wins over an "ok" one)."""
    width = hi / bins
    index = case(
        (Inspection.norm_score >= hi, bins - 1),
        (Inspection.norm_score < 0, 0),
        else_=cast(Inspection.norm_score / width, Integer),
    ).label("bin")
    labelled_fail = exists().where(
        OperatorLabel.inspection_id == Inspection.id, OperatorLabel.verdict == Verdict.FAIL
    )
    labelled_pass = exists().where(
        OperatorLabel.inspection_id == Inspection.id, OperatorLabel.verdict == Verdict.PASS
    )
    cls = case((labelled_fail, "defect"), (labelled_pass, "ok"), else_="unlabelled").label("cls")
    rows = session.execute(
        select(index, cls, func.count())
        .where(*_window(station_id, since, until))
        .group_by(index, cls)
    ).tuples()
    counts = {name: [0] * bins for name in ("ok", "defect", "unlabelled")}
    for b, name, n in rows:
        counts[str(name)][min(bins - 1, max(0, int(b)))] += int(n)
    return Histogram(hi=hi, bins=bins, counts=counts)


def defect_pareto(
    session: Session,
    *,
    station_id: int | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
) -> list[tuple[str, int]]:
    """Detected defect regions per predicted type, most frequent first.

    Open-set rejections count as ``unknown``; regions without a type as ``untyped``.
    """
    name = case(
        (DefectRegion.is_unknown, "unknown"),
        (DefectType.name.is_(None), "untyped"),
        else_=DefectType.name,
    ).label("name")
    rows = session.execute(
        select(name, func.count())
        .select_from(DefectRegion)
        .join(Inspection, Inspection.id == DefectRegion.inspection_id)
        .outerjoin(DefectType, DefectType.id == DefectRegion.defect_type_id)
        .where(*_window(station_id, since, until))
        .group_by(name)
        .order_by(func.count().desc(), name)
    ).tuples()
    return [(str(n), int(c)) for n, c in rows]


# -- thresholds ----------------------------------------------------------------------------


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


# -- models, jobs, users, audit ------------------------------------------------------------


def model_versions(session: Session, *, station_id: int | None = None) -> list[ModelVersion]:
    """Model versions newest first (see :func:`repo.list_model_versions`)."""
    return repo.list_model_versions(session, station_id=station_id)


def get_model_version(session: Session, model_version_id: int) -> ModelVersion:
    """One model version.

    Raises:
        NotFoundError: no such version.
    """
    version = session.get(ModelVersion, model_version_id)
    if version is None:
        raise NotFoundError(f"model version {model_version_id} does not exist")
    return version


def model_inspection_stats(
    session: Session, model_version_ids: Sequence[int]
) -> dict[int, dict[str, float | int | None]]:
    """Per model version: inspections scored, fail rate and mean latency (production numbers
    beside the offline metrics)."""
    if not model_version_ids:
        return {}
    rows = session.execute(
        select(
            Inspection.model_version_id,
            func.count(),
            func.sum(case((Inspection.verdict == Verdict.FAIL, 1), else_=0)),
            func.avg(Inspection.latency_ms),
        )
        .where(Inspection.model_version_id.in_(list(model_version_ids)))
        .group_by(Inspection.model_version_id)
    ).tuples()
    stats: dict[int, dict[str, float | int | None]] = {}
    for version_id, n, fails, latency in rows:
        if version_id is None:
            continue
        stats[version_id] = {
            "inspections": int(n),
            "fail_rate": float(fails or 0) / int(n) if n else None,
            "mean_latency_ms": float(latency) if latency is not None else None,
        }
    return stats


def retrain_jobs(session: Session, *, limit: int = 50) -> list[RetrainJob]:
    """The newest retraining jobs."""
    return list(session.scalars(select(RetrainJob).order_by(RetrainJob.id.desc()).limit(limit)))


def list_users(session: Session) -> list[User]:
    """Every user, by username."""
    return list(session.scalars(select(User).order_by(User.username)))


def audit_page(
    session: Session,
    *,
    limit: int,
    before_id: int | None = None,
    entity_type: str | None = None,
    actor: str | None = None,
) -> list[AuditLog]:
    """Audit-log rows newest first; page with ``before_id`` (the last id of the previous page)."""
    stmt = select(AuditLog).order_by(AuditLog.id.desc()).limit(limit)
    if before_id is not None:
        stmt = stmt.where(AuditLog.id < before_id)
    if entity_type is not None:
        stmt = stmt.where(AuditLog.entity_type == entity_type)
    if actor is not None:
        stmt = stmt.where(AuditLog.actor == actor)
    return list(session.scalars(stmt))
