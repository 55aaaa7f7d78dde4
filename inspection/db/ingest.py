"""Recording inspections from stations: one at a time, or in bulk with idempotency keys
(a key stored twice keeps the first row), with regions and artifact rows.

Conventions of every data-access module: :mod:`inspection.db`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from inspection.db.common import require_aware
from inspection.db.models import (
    Artifact,
    ArtifactKind,
    DefectRegion,
    DefectType,
    Inspection,
    Verdict,
    utcnow,
)
from inspection.db.plant import get_or_create_defect_type
from inspection.storage import StoredObject

log = logging.getLogger(__name__)

_IN_CHUNK = 500  # keys per IN (...) list
#: ArtifactData fields that are artifact columns as they are.
_ARTIFACT_COLUMNS = (
    "store_key",
    "sha256",
    "size_bytes",
    "media_type",
    "width_px",
    "height_px",
    "heatmap_max",
    "heatmap_mean",
)


# -- input containers --------------------------------------------------------------------------


@dataclass(frozen=True)
class RegionData:
    """A detected defect region to record.

    ``x, y, w, h``: bounding box in frame pixels; ``area_px``: anomalous pixel count;
    ``defect_type``: a type name (created when new) or None when untyped; ``is_unknown``: the
    open-set classifier rejected every known type.
    """

    x: int
    y: int
    w: int
    h: int
    area_px: float
    score: float | None = None
    defect_type: str | None = None
    confidence: float | None = None
    is_unknown: bool = False


@dataclass(frozen=True)
class ArtifactData:
    """A stored file to attach to an inspection (see :class:`inspection.storage.ArtifactStore`).

    ``region_index`` ties a crop to the region at that index of the same call's ``regions``.
    """

    kind: ArtifactKind
    store_key: str
    sha256: str
    size_bytes: int
    media_type: str | None = None
    width_px: int | None = None
    height_px: int | None = None
    heatmap_max: float | None = None
    heatmap_mean: float | None = None
    region_index: int | None = None

    @classmethod
    def from_stored(
        cls, stored: StoredObject, *, kind: ArtifactKind | str, **extra: Any
    ) -> ArtifactData:
        """Build from what :meth:`ArtifactStore.put_bytes` returned."""
        return cls(
            kind=ArtifactKind(kind),
            store_key=stored.key,
            sha256=stored.sha256,
            size_bytes=stored.size_bytes,
            **extra,
        )


# -- inspections -------------------------------------------------------------------------------


def _defect_type_ids(session: Session, names: Iterable[str | None]) -> dict[str, int]:
    wanted = {_type_key(n) for n in names if n is not None and n.strip()}
    if not wanted:
        return {}
    rows = session.execute(
        select(DefectType.name, DefectType.id).where(DefectType.name.in_(wanted))
    ).tuples()
    found = {name: ident for name, ident in rows}
    for name in wanted - found.keys():
        found[name] = get_or_create_defect_type(session, name).id
    return found


def _type_key(name: str) -> str:
    return name.strip().lower()


@dataclass(frozen=True)
class InspectionData:
    """One inspection to record (:func:`record_inspection`, :func:`record_inspections`)."""

    station_id: int
    captured_at: dt.datetime
    frame_ref: str
    model_version_id: int | None
    raw_score: float
    norm_score: float
    verdict: Verdict | str
    latency_ms: float
    idempotency_key: str
    regions: Sequence[RegionData] = ()
    artifacts: Sequence[ArtifactData] = ()
    camera_id: int | None = None

    def validate(self) -> None:
        """Reject naive capture times, bad keys and dangling region indexes."""
        require_aware(self.captured_at, "captured_at")
        if not self.idempotency_key or len(self.idempotency_key) > 64:
            raise ValueError("idempotency_key must be 1..64 characters")
        for artifact in self.artifacts:
            index = artifact.region_index
            if index is not None and not 0 <= index < len(self.regions):
                raise ValueError(f"artifact region_index {index} out of range")


def _build_inspection(data: InspectionData, type_ids: Mapping[str, int]) -> Inspection:
    now = utcnow()
    regions = [DefectRegion(**_region_row(r, type_ids)) for r in data.regions]
    artifacts = [
        Artifact(
            region=regions[a.region_index] if a.region_index is not None else None,
            **_artifact_row(a, now),
        )
        for a in data.artifacts
    ]
    return Inspection(**_inspection_row(data, now), regions=regions, artifacts=artifacts)


def record_inspection(session: Session, item: InspectionData) -> Inspection:
    """Store one inspection with its regions and artifacts; idempotent on the key.

    If ``(station_id, idempotency_key)`` is already stored, the stored inspection is returned
    unchanged (replaying a station's spool is harmless), also when another writer inserts the
    same key concurrently. ``captured_at`` must be timezone-aware.
    """
    return record_inspections(session, [item])[0]


def record_inspections(session: Session, items: Sequence[InspectionData]) -> list[Inspection]:
    """Store many inspections in one flush (spool replay, imports); idempotent per key.

    Returns one inspection per item, in order: the stored one for keys already present (or
    repeated within ``items``). All rows go in one savepoint; if a concurrent writer inserted
    one of the keys meanwhile, the items are retried one at a time.
    """
    for item in items:
        item.validate()
    existing = _existing_by_key(session, items)
    type_ids = _defect_type_ids(session, (r.defect_type for i in items for r in i.regions))
    result: dict[tuple[int, str], Inspection] = dict(existing)
    new: list[Inspection] = []
    for item in items:
        key = (item.station_id, item.idempotency_key)
        if key not in result:
            result[key] = _build_inspection(item, type_ids)
            new.append(result[key])
    if new:
        try:
            with session.begin_nested():
                session.add_all(new)
                session.flush()
        except IntegrityError:
            if len(items) == 1:
                item = items[0]
                found = _find_by_key(session, item.station_id, item.idempotency_key)
                if found is None:
                    raise
                log.info(
                    "inspection %s/%s was stored concurrently",
                    item.station_id,
                    item.idempotency_key,
                )
                return [found]
            return [record_inspections(session, [item])[0] for item in items]
    return [result[(item.station_id, item.idempotency_key)] for item in items]


def insert_inspections(session: Session, items: Sequence[InspectionData]) -> list[int]:
    """Store many inspections with bulk INSERTs; the inspection id per item, in order.

    The station's hot path: the same rows as :func:`record_inspections` (idempotent per
    ``(station_id, idempotency_key)``, regions, artifacts tied to their regions), written with
    one multi-row INSERT ... RETURNING per table instead of ORM objects. Optimistic: new keys
    (the station's normal case) cost no lookup; only when the unique key refuses the batch are
    the stored keys looked up and the rest inserted, and if a concurrent writer got in between,
    the items are retried one at a time. Keys already stored (or repeated within ``items``)
    return the stored id.
    """
    unique = _validated_by_key(items)
    ids: dict[tuple[int, str], int] = {}
    try:
        with session.begin_nested():
            ids.update(_bulk_insert(session, list(unique.values())))
    except IntegrityError:
        ids = _existing_ids(session, items)
        new = [item for key, item in unique.items() if key not in ids]
        try:
            if new:
                with session.begin_nested():
                    ids.update(_bulk_insert(session, new))
        except IntegrityError:
            if len(items) == 1:
                raise
            return [insert_inspections(session, [item])[0] for item in items]
    return [ids[(item.station_id, item.idempotency_key)] for item in items]


def insert_new_inspections(session: Session, items: Sequence[InspectionData]) -> None:
    """Store inspections whose keys are all new, in the fewest statements; no ids returned.

    The station's hot path under :func:`insert_inspections`: no savepoint, and rows without
    regions or artifacts (the passing parts) go in one plain multi-row INSERT without
    RETURNING. Run it in a transaction of its own: if a key is already stored it raises
    :class:`~sqlalchemy.exc.IntegrityError` and that transaction must be rolled back (then store
    the batch with :func:`insert_inspections`, which handles stored keys).
    """
    _bulk_insert(session, list(_validated_by_key(items).values()), need_ids=False)


def _validated_by_key(items: Sequence[InspectionData]) -> dict[tuple[int, str], InspectionData]:
    """``items`` validated, by (station id, key); a key repeated within them is kept once."""
    unique: dict[tuple[int, str], InspectionData] = {}
    for item in items:
        item.validate()
        unique.setdefault((item.station_id, item.idempotency_key), item)
    return unique


def _inspection_row(d: InspectionData, now: dt.datetime) -> dict[str, Any]:
    """The inspection's columns (with :func:`_region_row` and :func:`_artifact_row`: one
    mapping for the ORM objects of :func:`record_inspections` and the bulk INSERTs)."""
    return {
        "station_id": d.station_id,
        "camera_id": d.camera_id,
        "captured_at": d.captured_at,
        "frame_ref": d.frame_ref,
        "idempotency_key": d.idempotency_key,
        "model_version_id": d.model_version_id,
        "raw_score": float(d.raw_score),
        "norm_score": float(d.norm_score),
        "verdict": Verdict(d.verdict),
        "latency_ms": float(d.latency_ms),
        "has_unknown": any(r.is_unknown for r in d.regions),
        "created_at": now,
    }


def _region_row(r: RegionData, type_ids: Mapping[str, int]) -> dict[str, Any]:
    return {
        "x": r.x,
        "y": r.y,
        "w": r.w,
        "h": r.h,
        "area_px": float(r.area_px),
        "score": r.score,
        "defect_type_id": type_ids[_type_key(r.defect_type)]
        if r.defect_type is not None and r.defect_type.strip()
        else None,
        "confidence": r.confidence,
        "is_unknown": r.is_unknown,
    }


def _artifact_row(a: ArtifactData, now: dt.datetime) -> dict[str, Any]:
    return {
        **{f: getattr(a, f) for f in _ARTIFACT_COLUMNS},
        "kind": ArtifactKind(a.kind),
        "created_at": now,
    }


def _bulk_insert(
    session: Session, items: Sequence[InspectionData], *, need_ids: bool = True
) -> dict[tuple[int, str], int]:
    """INSERT ``items`` (distinct new keys) with their regions and artifacts; their ids.

    ``need_ids=False``: items without regions and artifacts are inserted without RETURNING
    and left out of the returned ids.
    """
    now = utcnow()
    table = Inspection.__table__
    if not need_ids:
        plain = [d for d in items if not d.regions and not d.artifacts]
        if plain:
            session.execute(insert(table), [_inspection_row(d, now) for d in plain])  # type: ignore[arg-type]
            items = [d for d in items if d.regions or d.artifacts]
            if not items:
                return {}
    type_ids = _defect_type_ids(session, (r.defect_type for i in items for r in i.regions))
    # RETURNING the unique key with the id, matched up here: asking SQLAlchemy to return rows
    # in parameter order instead makes it send one INSERT per row on SQLite (no sentinel).
    rows = session.execute(
        insert(table).returning(  # type: ignore[arg-type]
            table.c.id,
            table.c.station_id,
            table.c.idempotency_key,
        ),
        [_inspection_row(d, now) for d in items],
    )
    by_key = {(int(station), str(key)): int(ident) for ident, station, key in rows}
    inspection_ids = [by_key[(d.station_id, d.idempotency_key)] for d in items]
    owners: list[tuple[int, int]] = []  # (item position, region index) per region row
    region_rows: list[dict[str, Any]] = []
    for pos, (d, ident) in enumerate(zip(items, inspection_ids, strict=True)):
        for index, r in enumerate(d.regions):
            owners.append((pos, index))
            region_rows.append({"inspection_id": ident, **_region_row(r, type_ids)})
    region_ids: dict[tuple[int, int], int] = {}
    if region_rows:
        regions = DefectRegion.__table__
        got = session.execute(
            insert(regions).returning(regions.c.id, sort_by_parameter_order=True),  # type: ignore[arg-type]
            region_rows,
        )
        region_ids = {owner: int(row[0]) for owner, row in zip(owners, got, strict=True)}
    artifact_rows = [
        {
            **_artifact_row(a, now),
            "inspection_id": ident,
            "region_id": region_ids[(pos, a.region_index)] if a.region_index is not None else None,
        }
        for pos, (d, ident) in enumerate(zip(items, inspection_ids, strict=True))
        for a in d.artifacts
    ]
    if artifact_rows:
        session.execute(insert(Artifact.__table__), artifact_rows)  # type: ignore[arg-type]
    return {
        (d.station_id, d.idempotency_key): ident
        for d, ident in zip(items, inspection_ids, strict=True)
    }


def _key_chunks(items: Sequence[InspectionData]) -> Iterable[tuple[int, list[str]]]:
    """The items' idempotency keys per station, in chunks fit for an ``IN (...)`` list."""
    by_station: dict[int, set[str]] = {}
    for item in items:
        by_station.setdefault(item.station_id, set()).add(item.idempotency_key)
    for station_id, keys in by_station.items():
        ordered = sorted(keys)
        for start in range(0, len(ordered), _IN_CHUNK):
            yield station_id, ordered[start : start + _IN_CHUNK]


def _existing_ids(session: Session, items: Sequence[InspectionData]) -> dict[tuple[int, str], int]:
    """Ids of the items' keys already stored."""
    found: dict[tuple[int, str], int] = {}
    for station_id, chunk in _key_chunks(items):
        rows = session.execute(
            select(Inspection.idempotency_key, Inspection.id).where(
                Inspection.station_id == station_id, Inspection.idempotency_key.in_(chunk)
            )
        ).tuples()
        for key, ident in rows:
            found[(station_id, key)] = ident
    return found


def _existing_by_key(
    session: Session, items: Sequence[InspectionData]
) -> dict[tuple[int, str], Inspection]:
    found: dict[tuple[int, str], Inspection] = {}
    for station_id, chunk in _key_chunks(items):
        stmt = select(Inspection).where(
            Inspection.station_id == station_id, Inspection.idempotency_key.in_(chunk)
        )
        for inspection in session.scalars(stmt):
            found[(station_id, inspection.idempotency_key)] = inspection
    return found


def _find_by_key(session: Session, station_id: int, key: str) -> Inspection | None:
    return session.scalar(
        select(Inspection).where(
            Inspection.station_id == station_id, Inspection.idempotency_key == key
        )
    )
