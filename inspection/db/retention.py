"""Retention: forget old, uninteresting inspections and their files, keep everything else.

Per station, inspections older than ``keep_days`` are deleted with their regions, artifact rows
and (when no other row shares the content-addressed file) artifact files, unless they are:

* defects (verdict ``fail``),
* labelled by an operator (any label), or
* part of a training set (``training_set_item``; the foreign key also refuses the delete).

Work is done in batches, each committed before its files are removed, so transactions stay
short (stations keep writing to the same SQLite file meanwhile) and a crash never leaves rows
that point at deleted files (at worst it leaves unreferenced files behind).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session

from inspection.db.models import (
    Artifact,
    Inspection,
    OperatorLabel,
    Station,
    TrainingSetItem,
    Verdict,
    utcnow,
)
from inspection.db.repo import write_audit
from inspection.errors import NotFoundError, StorageError
from inspection.storage import ArtifactStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionResult:
    """What one retention run removed."""

    station_id: int
    cutoff: dt.datetime
    inspections_deleted: int
    artifact_rows_deleted: int
    files_deleted: int
    files_missing: int


def apply_retention(
    session: Session,
    store: ArtifactStore,
    station_id: int,
    keep_days: int,
    now: dt.datetime | None = None,
    *,
    batch_size: int = 500,
) -> RetentionResult:
    """Delete the station's plain passes captured before ``now - keep_days`` (see module doc).

    **Commits** the session after each batch (start it without pending changes). ``now``
    defaults to the current UTC time and must be timezone-aware. Files that fail to delete are
    logged and counted as missing; the rows are already gone.
    """
    if keep_days < 0:
        raise ValueError(f"keep_days must be >= 0, got {keep_days}")
    if session.get(Station, station_id) is None:
        raise NotFoundError(f"station {station_id} does not exist")
    now = now or utcnow()
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    cutoff = now - dt.timedelta(days=keep_days)
    candidates = (
        select(Inspection.id)
        .where(
            Inspection.station_id == station_id,
            Inspection.captured_at < cutoff,
            Inspection.verdict == Verdict.PASS,
            ~exists().where(OperatorLabel.inspection_id == Inspection.id),
            ~exists().where(TrainingSetItem.inspection_id == Inspection.id),
        )
        .order_by(Inspection.id)
        .limit(batch_size)
    )
    total_inspections = total_rows = total_files = total_missing = 0
    while True:
        ids = list(session.scalars(candidates))
        if not ids:
            break
        artifact_keys = list(
            session.scalars(select(Artifact.store_key).where(Artifact.inspection_id.in_(ids)))
        )
        keys = set(artifact_keys)
        rows = len(artifact_keys)
        # Regions and artifacts go with the inspection (ON DELETE CASCADE).
        session.execute(
            delete(Inspection).where(Inspection.id.in_(ids)),
            execution_options={"synchronize_session": False},
        )
        shared = set(
            session.scalars(select(Artifact.store_key).where(Artifact.store_key.in_(keys)))
        )
        session.commit()
        session.expunge_all()
        deleted, missing = _delete_files(store, sorted(keys - shared))
        total_inspections += len(ids)
        total_rows += rows
        total_files += deleted
        total_missing += missing
        if len(ids) < batch_size:
            break
    result = RetentionResult(
        station_id=station_id,
        cutoff=cutoff,
        inspections_deleted=total_inspections,
        artifact_rows_deleted=total_rows,
        files_deleted=total_files,
        files_missing=total_missing,
    )
    if total_inspections:
        write_audit(
            session,
            actor="retention",
            action="retention.apply",
            entity_type="station",
            entity_id=station_id,
            after={
                "keep_days": keep_days,
                "cutoff": cutoff.isoformat(),
                "inspections_deleted": total_inspections,
                "files_deleted": total_files,
            },
        )
        session.commit()
    log.info(
        "retention station %d: %d inspections, %d files deleted (before %s)",
        station_id,
        total_inspections,
        total_files,
        cutoff.isoformat(),
    )
    return result


def apply_retention_policies(
    session: Session, store: ArtifactStore, now: dt.datetime | None = None
) -> list[RetentionResult]:
    """Run :func:`apply_retention` for every station with a ``retention_days`` setting."""
    stations = list(
        session.execute(
            select(Station.id, Station.retention_days).where(Station.retention_days.is_not(None))
        ).tuples()
    )
    session.commit()
    return [
        apply_retention(session, store, station_id, days, now)
        for station_id, days in stations
        if days is not None
    ]


def _delete_files(store: ArtifactStore, keys: list[str]) -> tuple[int, int]:
    deleted = missing = 0
    for key in keys:
        try:
            if store.delete(key):
                deleted += 1
            else:
                missing += 1
        except StorageError as exc:
            log.warning("retention could not delete artifact %s: %s", key, exc)
            missing += 1
    return deleted, missing
