"""Production statistics: the line overview (per station, last 24 h) and the charts (yield over
time, score histogram by operator verdict, defect Pareto). Reads only.

Every aggregate is one SQL statement with a time window
(:func:`inspection.db.review.window_filters`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, Integer, String, case, cast, exists, func, select
from sqlalchemy.orm import Session

from inspection.db.models import (
    DefectRegion,
    DefectType,
    Inspection,
    ModelStatus,
    ModelVersion,
    OperatorLabel,
    Station,
    Verdict,
    utcnow,
)
from inspection.db.review import QueueFilters, review_filters, window_filters
from inspection.services.review_queue import (
    DEFAULT_REVIEW_FLOOR,
    image_threshold,
    review_floors,
    stations_by_id,
)


@dataclass
class StationSummary:
    """What the line overview shows for one station: pass/fail counts over the last 24 h;
    ``to_review`` is its default review queue (flagged or uncertain, not labelled, any time)."""

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


def _default_queue(session: Session, stations: dict[int, Station]) -> list[ColumnElement[bool]]:
    """The default review queue's filters (flagged or uncertain, not labelled, any time): what
    the overview counts as "flagged, not reviewed", so the two numbers agree."""
    filters = review_filters(
        session,
        QueueFilters(),
        review_floor=review_floors(stations),
        default_floor=DEFAULT_REVIEW_FLOOR,
    )
    assert filters is not None  # only a defect-type filter can match nothing
    return filters


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
        .where(*_default_queue(session, stations))
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


def _bucket_expr(session: Session, hourly: bool) -> ColumnElement[str]:
    """SQL text of the UTC hour or day a capture falls in (``YYYY-MM-DD HH`` / ``YYYY-MM-DD``)."""
    if session.get_bind().dialect.name == "postgresql":
        fmt = "YYYY-MM-DD HH24" if hourly else "YYYY-MM-DD"
        return func.to_char(func.timezone("UTC", Inspection.captured_at), fmt, type_=String)
    fmt = "%Y-%m-%d %H" if hourly else "%Y-%m-%d"
    return func.strftime(fmt, Inspection.captured_at, type_=String)


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
            *window_filters(station_id, since, until)
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
        .where(*window_filters(station_id, since, until))
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
        .where(*window_filters(station_id, since, until))
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
        .where(*window_filters(station_id, since, until))
        .group_by(name)
        .order_by(func.count().desc(), name)
    ).tuples()
    return [(str(n), int(c)) for n, c in rows]
