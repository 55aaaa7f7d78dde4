"""Data-access functions on SQLite and PostgreSQL (databases built by the migrations)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from inspection.db import ingest, repo
from inspection.db.models import (
    ArtifactKind,
    AuditLog,
    Inspection,
    JobStatus,
    ModelStatus,
    ModelVersion,
    Role,
    Verdict,
)
from inspection.db.repo import ArtifactData, RegionData
from inspection.errors import InvalidCursorError, InvalidStateError, NotFoundError

T0 = dt.datetime(2025, 3, 1, 8, 0, tzinfo=dt.UTC)


@dataclass
class World:
    station_id: int
    other_station_id: int
    operator_id: int
    engineer_id: int
    model_id: int


@pytest.fixture
def world(session: Session) -> World:
    station = repo.upsert_station(session, name="s1", line_name="line-a", image_threshold=0.5)
    other = repo.upsert_station(session, name="s2", line_name="line-a")
    operator = repo.create_user(session, username="olga", role=Role.OPERATOR)
    engineer = repo.create_user(session, username="erik", role="engineer")
    model = repo.register_model_version(
        session,
        station_id=station.id,
        name="patchcore-1",
        detector_type="patchcore",
        artifact_path="models/pc1",
        config={"backbone": "wide_resnet50_2"},
        metrics={"image_auroc": 0.97},
    )
    session.commit()
    return World(station.id, other.id, operator.id, engineer.id, model.id)


def _record(
    session: Session,
    world: World,
    key: str,
    score: float,
    *,
    unknown: bool = False,
    defect_type: str | None = None,
    minutes: int = 0,
    station_id: int | None = None,
) -> Inspection:
    regions = []
    if score >= 0.5 or unknown:
        regions.append(
            RegionData(
                x=10,
                y=20,
                w=30,
                h=40,
                area_px=900.0,
                score=score,
                defect_type=defect_type,
                confidence=0.8,
                is_unknown=unknown,
            )
        )
    return repo.record_inspection(
        session,
        repo.InspectionData(
            station_id=station_id or world.station_id,
            captured_at=T0 + dt.timedelta(minutes=minutes),
            frame_ref=f"frames/{key}.png",
            model_version_id=world.model_id,
            raw_score=score * 10,
            norm_score=score,
            verdict=Verdict.FAIL if score >= 0.5 else Verdict.PASS,
            latency_ms=12.5,
            idempotency_key=key,
            regions=regions,
        ),
    )


def test_upserts_are_idempotent(session: Session, world: World) -> None:
    again = repo.upsert_station(
        session, name="s1", line_name="line-a", image_threshold=0.9, retention_days=30
    )
    assert again.id == world.station_id
    assert again.image_threshold == 0.5  # thresholds belong to operators once created
    assert again.retention_days == 30
    cam = repo.upsert_camera(session, station_id=world.station_id, name="top", width_px=1280)
    cam2 = repo.upsert_camera(session, station_id=world.station_id, name="top", height_px=960)
    assert cam.id == cam2.id
    assert (cam2.width_px, cam2.height_px) == (1280, 960)
    with pytest.raises(NotFoundError):
        repo.get_station_by_name(session, "nope")


def test_thresholds_change_is_audited(session: Session, world: World) -> None:
    repo.set_station_thresholds(
        session,
        station_id=world.station_id,
        image_threshold=0.6,
        pixel_threshold=0.4,
        changed_by=world.engineer_id,
    )
    session.commit()
    station = repo.get_station(session, world.station_id)
    assert (station.image_threshold, station.pixel_threshold) == (0.6, 0.4)
    entry = session.scalars(
        select(AuditLog).where(AuditLog.action == "station.set_thresholds")
    ).one()
    assert entry.actor == "erik"
    assert entry.user_id == world.engineer_id
    assert entry.before == {"image_threshold": 0.5, "pixel_threshold": None}
    assert entry.after == {"image_threshold": 0.6, "pixel_threshold": 0.4}
    assert entry.at.tzinfo is not None


def test_model_lifecycle_keeps_one_active(session: Session, world: World) -> None:
    assert repo.get_active_model(session, world.station_id) is None
    repo.set_model_status(session, model_version_id=world.model_id, status=ModelStatus.ACTIVE)
    child = repo.register_model_version(
        session,
        station_id=world.station_id,
        name="patchcore-2",
        detector_type="patchcore",
        artifact_path="models/pc2",
        parent_id=world.model_id,
    )
    repo.set_model_status(
        session, model_version_id=child.id, status="active", changed_by=world.engineer_id
    )
    session.commit()
    active = repo.get_active_model(session, world.station_id)
    assert active is not None
    assert active.id == child.id
    assert active.activated_at is not None
    old = session.get(ModelVersion, world.model_id)
    assert old is not None
    assert old.status == ModelStatus.RETIRED
    with pytest.raises(InvalidStateError):
        repo.set_model_status(session, model_version_id=child.id, status="candidate")
    # Rolling back to the retired version is allowed and retires the current one.
    repo.set_model_status(session, model_version_id=world.model_id, status="active")
    session.commit()
    active = repo.get_active_model(session, world.station_id)
    assert active is not None
    assert active.id == world.model_id
    assert [v.name for v in repo.list_model_versions(session, station_id=world.station_id)] == [
        "patchcore-2",
        "patchcore-1",
    ]


def test_record_inspection_is_idempotent(session: Session, world: World) -> None:
    first = _record(session, world, "frame-1", 0.9, defect_type="Crack")
    session.commit()
    replay = _record(session, world, "frame-1", 0.1)  # spool replay: same key, other payload
    session.commit()
    assert replay.id == first.id
    assert replay.norm_score == 0.9
    count = session.scalar(select(func.count()).select_from(Inspection))
    assert count == 1
    # The same key on another station is a different inspection.
    _record(session, world, "frame-1", 0.2, station_id=world.other_station_id)
    session.commit()
    assert session.scalar(select(func.count()).select_from(Inspection)) == 2


def test_record_inspection_stores_regions_artifacts_and_aware_times(
    session: Session, world: World
) -> None:
    inspection = repo.record_inspection(
        session,
        repo.InspectionData(
            station_id=world.station_id,
            captured_at=dt.datetime(2025, 3, 1, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            frame_ref="frames/a.png",
            model_version_id=world.model_id,
            raw_score=3.2,
            norm_score=0.8,
            verdict="fail",
            latency_ms=20.0,
            idempotency_key="k1",
            regions=[
                RegionData(x=1, y=2, w=3, h=4, area_px=9, defect_type="crack"),
                RegionData(x=5, y=6, w=7, h=8, area_px=30, is_unknown=True),
            ],
            artifacts=[
                ArtifactData(
                    kind=ArtifactKind.HEATMAP,
                    store_key="ab/cd/abcd.npz",
                    sha256="ab" * 32,
                    size_bytes=100,
                    heatmap_max=0.93,
                    heatmap_mean=0.1,
                ),
                ArtifactData(
                    kind=ArtifactKind.CROP,
                    store_key="ef/01/ef01.png",
                    sha256="ef" * 32,
                    size_bytes=50,
                    region_index=1,
                ),
            ],
        ),
    )
    session.commit()
    session.expunge_all()
    loaded = repo.get_inspection(session, inspection.id)
    assert loaded.captured_at == dt.datetime(2025, 3, 1, 8, 0, tzinfo=dt.UTC)
    assert loaded.captured_at.tzinfo is not None
    assert loaded.has_unknown
    assert [r.defect_type.name if r.defect_type else None for r in loaded.regions] == [
        "crack",
        None,
    ]
    heatmap, crop = loaded.artifacts
    assert heatmap.heatmap_max == pytest.approx(0.93)
    assert crop.region_id == loaded.regions[1].id
    with pytest.raises(ValueError, match="aware"):
        repo.record_inspection(
            session,
            repo.InspectionData(
                station_id=world.station_id,
                captured_at=dt.datetime(2025, 3, 1, 10, 0),  # naive
                frame_ref="f",
                model_version_id=None,
                raw_score=0,
                norm_score=0,
                verdict="pass",
                latency_ms=1,
                idempotency_key="k2",
            ),
        )


def test_labels_keep_history_latest_is_current(session: Session, world: World) -> None:
    inspection = _record(session, world, "f", 0.7)
    repo.add_label(session, inspection_id=inspection.id, user_id=world.operator_id, verdict="fail")
    repo.add_label(
        session,
        inspection_id=inspection.id,
        user_id=world.operator_id,
        verdict="fail",
        defect_type="Scratch ",  # a new type, created through the label
        note="changed my mind about the type",
    )
    repo.add_label(session, inspection_id=inspection.id, user_id=world.engineer_id, verdict="pass")
    session.commit()
    history = repo.label_history(session, inspection_id=inspection.id)
    assert len(history) == 3
    current = repo.current_labels(session, inspection_id=inspection.id)
    assert [(c.user.username, c.verdict) for c in current] == [
        ("olga", Verdict.FAIL),
        ("erik", Verdict.PASS),
    ]
    assert current[0].defect_type is not None
    assert current[0].defect_type.name == "scratch"
    assert "scratch" in [t.name for t in repo.list_defect_types(session)]


def test_review_queue_order_filters_and_pagination(session: Session, world: World) -> None:
    scores = [0.1, 0.95, 0.49, 0.51, 0.3, 0.8, 0.05, 0.6]
    for i, score in enumerate(scores):
        _record(session, world, f"k{i}", score, defect_type="crack", minutes=i)
    _record(session, world, "unk", 0.2, unknown=True, minutes=20)
    labelled = _record(session, world, "lab", 0.99, defect_type="dent", minutes=21)
    repo.add_label(session, inspection_id=labelled.id, user_id=world.operator_id, verdict="fail")
    _record(session, world, "elsewhere", 0.97, station_id=world.other_station_id)
    session.commit()

    page = repo.review_queue(session, repo.QueueFilters(station_id=world.station_id), limit=50)
    keys = [i.idempotency_key for i in page.items]
    assert keys[0] == "unk"  # unknown type first, whatever its score
    assert [i.norm_score for i in page.items[1:]] == sorted(scores, reverse=True)
    assert "lab" not in keys  # labelled
    assert page.next_cursor is None

    with_labelled = repo.review_queue(
        session, repo.QueueFilters(station_id=world.station_id, include_labelled=True)
    )
    assert with_labelled.items[1].idempotency_key == "lab"

    high = repo.review_queue(session, repo.QueueFilters(station_id=world.station_id, min_score=0.5))
    assert {i.idempotency_key for i in high.items} == {"k1", "k3", "k5", "k7"}

    typed = repo.review_queue(session, repo.QueueFilters(defect_type="crack"))
    assert {i.idempotency_key for i in typed.items} == {"k1", "k3", "k5", "k7"}
    assert repo.review_queue(session, repo.QueueFilters(defect_type="never-seen")).items == []

    window = repo.review_queue(
        session,
        repo.QueueFilters(
            station_id=world.station_id,
            since=T0 + dt.timedelta(minutes=2),
            until=T0 + dt.timedelta(minutes=5),
        ),
    )
    assert {i.idempotency_key for i in window.items} == {"k2", "k3", "k4"}

    # Keyset pages cover the queue exactly once, in order.
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = repo.review_queue(session, limit=3, cursor=cursor)
        seen += [i.idempotency_key for i in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    full = [i.idempotency_key for i in repo.review_queue(session, limit=100).items]
    assert seen == full
    assert len(full) == len(scores) + 2  # + unknown + other station
    offset_page = repo.review_queue(session, limit=3, offset=3)
    assert [i.idempotency_key for i in offset_page.items] == full[3:6]
    with pytest.raises(InvalidCursorError):
        repo.review_queue(session, cursor="not-a-cursor")


def test_list_inspections(session: Session, world: World) -> None:
    for i in range(5):
        _record(session, world, f"k{i}", 0.1 * i, minutes=i)
    session.commit()
    items = repo.list_inspections(session, station_id=world.station_id, limit=2)
    assert [i.idempotency_key for i in items] == ["k4", "k3"]
    fails = repo.list_inspections(session, verdict="fail")
    assert fails == []
    later = repo.list_inspections(session, since=T0 + dt.timedelta(minutes=3))
    assert {i.idempotency_key for i in later} == {"k3", "k4"}


def test_retrain_job_lifecycle(session: Session, world: World) -> None:
    inspections = [_record(session, world, f"k{i}", 0.2) for i in range(3)]
    job = repo.create_retrain_job(
        session,
        station_id=world.station_id,
        base_model_version_id=world.model_id,
        detector_type="patchcore",
        requested_by=world.engineer_id,
        training_inspection_ids=[i.id for i in inspections],
    )
    session.commit()
    assert job.status == JobStatus.QUEUED
    claimed = repo.claim_next_retrain_job(session)
    assert claimed is not None
    assert claimed.id == job.id
    assert claimed.status == JobStatus.RUNNING
    assert claimed.started_at is not None
    assert repo.claim_next_retrain_job(session) is None
    repo.update_retrain_job(session, job_id=job.id, metrics={"epoch": 1}, append_log="epoch 1\n")
    repo.update_retrain_job(
        session,
        job_id=job.id,
        status="succeeded",
        metrics={"image_auroc": 0.99},
        append_log="done\n",
    )
    session.commit()
    assert job.metrics == {"epoch": 1, "image_auroc": 0.99}
    assert job.log == "epoch 1\ndone\n"
    assert job.finished_at is not None
    with pytest.raises(InvalidStateError):
        repo.update_retrain_job(session, job_id=job.id, status="running")
    version = repo.register_model_version(
        session,
        station_id=world.station_id,
        name="pc-retrained",
        detector_type="patchcore",
        artifact_path="models/pc3",
        parent_id=world.model_id,
        training_job_id=job.id,
    )
    session.commit()
    assert repo.training_set(session, model_version_id=version.id) == sorted(
        i.id for i in inspections
    )


def test_cancel_requests(session: Session, world: World) -> None:
    queued = repo.create_retrain_job(session, station_id=world.station_id)
    running = repo.create_retrain_job(session, station_id=world.station_id)
    repo.update_retrain_job(session, job_id=running.id, status="running")
    repo.request_cancel(session, job_id=queued.id, requested_by=world.engineer_id)
    repo.request_cancel(session, job_id=running.id)
    session.commit()
    assert queued.status == JobStatus.CANCELLED
    assert running.status == JobStatus.RUNNING
    assert running.cancel_requested
    repo.update_retrain_job(session, job_id=running.id, status="cancelled")
    with pytest.raises(NotFoundError):
        repo.update_retrain_job(session, job_id=10_000, status="running")


def test_table_counts(session: Session, world: World) -> None:
    counts = repo.table_counts(session)
    assert counts["station"] == 2
    assert counts["users"] == 2


def test_record_inspections_batch_is_idempotent(session: Session, world: World) -> None:
    first = _record(session, world, "dup", 0.7, defect_type="crack")
    session.commit()

    def item(key: str, score: float) -> repo.InspectionData:
        return repo.InspectionData(
            station_id=world.station_id,
            captured_at=T0,
            frame_ref=f"frames/{key}.png",
            model_version_id=None,
            raw_score=score,
            norm_score=score,
            verdict="pass",
            latency_ms=1.0,
            idempotency_key=key,
            regions=[RegionData(x=0, y=0, w=2, h=2, area_px=3, defect_type="Fresh-Type")],
        )

    stored = repo.record_inspections(
        session, [item("a", 0.1), item("dup", 0.2), item("b", 0.3), item("a", 0.4)]
    )
    session.commit()
    assert [s.idempotency_key for s in stored] == ["a", "dup", "b", "a"]
    assert stored[1].id == first.id
    assert stored[0] is stored[3]
    assert stored[0].norm_score == 0.1
    assert session.scalar(select(func.count()).select_from(Inspection)) == 3
    assert "fresh-type" in [t.name for t in repo.list_defect_types(session)]


def test_concurrent_insert_of_same_key_returns_stored_row(
    session: Session, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer stored the key between our check and our insert: no error, no dup."""
    first = _record(session, world, "race", 0.7)
    session.commit()
    session.expunge_all()
    monkeypatch.setattr(ingest, "_existing_by_key", lambda _session, _items: {})
    again = _record(session, world, "race", 0.1)
    session.commit()
    assert again.id == first.id
    assert session.scalar(select(func.count()).select_from(Inspection)) == 1
    # Also in a batch, where the whole savepoint is retried item by item.
    batch = repo.record_inspections(
        session,
        [
            repo.InspectionData(
                station_id=world.station_id,
                captured_at=T0,
                frame_ref="f",
                model_version_id=None,
                raw_score=0,
                norm_score=0,
                verdict="pass",
                latency_ms=1,
                idempotency_key=key,
            )
            for key in ("new-1", "race")
        ],
    )
    session.commit()
    assert batch[1].id == first.id
    assert session.scalar(select(func.count()).select_from(Inspection)) == 2


def _rich_item(world: World, key: str, *, station_id: int | None = None) -> repo.InspectionData:
    """An inspection with two regions (one unknown) and artifacts, one tied to region 1."""
    return repo.InspectionData(
        station_id=station_id or world.station_id,
        captured_at=T0,
        frame_ref=f"frames/{key}.png",
        model_version_id=world.model_id,
        raw_score=3.5,
        norm_score=0.8,
        verdict="fail",
        latency_ms=4.0,
        idempotency_key=key,
        camera_id=None,
        regions=[
            RegionData(x=1, y=2, w=3, h=4, area_px=9, score=0.9, defect_type="Scratch"),
            RegionData(x=5, y=6, w=7, h=8, area_px=20, score=0.7, is_unknown=True),
        ],
        artifacts=[
            ArtifactData(kind=ArtifactKind.FRAME, store_key=f"{key}-f", sha256="a", size_bytes=1),
            ArtifactData(
                kind=ArtifactKind.CROP,
                store_key=f"{key}-c",
                sha256="b",
                size_bytes=2,
                region_index=1,
            ),
        ],
    )


def _shape(inspection: Inspection) -> tuple[object, ...]:
    """Everything stored about an inspection except ids and creation times."""
    regions = [
        (r.x, r.y, r.w, r.h, r.area_px, r.score, r.defect_type_id, r.is_unknown)
        for r in inspection.regions
    ]
    index = {r.id: i for i, r in enumerate(inspection.regions)}
    artifacts = [
        (a.kind, a.sha256, a.size_bytes, None if a.region_id is None else index[a.region_id])
        for a in inspection.artifacts
    ]
    return (
        inspection.station_id,
        inspection.frame_ref,
        inspection.model_version_id,
        inspection.raw_score,
        inspection.norm_score,
        inspection.verdict,
        inspection.latency_ms,
        inspection.has_unknown,
        inspection.captured_at.replace(tzinfo=None),
        regions,
        artifacts,
    )


def test_bulk_insert_stores_what_the_orm_path_stores(session: Session, world: World) -> None:
    """The station's bulk path and the ORM path give the same rows, ids in order, idempotent."""
    orm = repo.record_inspections(session, [_rich_item(world, "orm")])[0]
    ids = repo.insert_inspections(
        session,
        [_rich_item(world, "bulk-1"), _rich_item(world, "orm"), _rich_item(world, "bulk-1")],
    )
    session.commit()
    session.expunge_all()
    assert ids[1] == orm.id and ids[0] == ids[2] and ids[0] != orm.id
    bulk = repo.get_inspection(session, ids[0])
    again = repo.get_inspection(session, orm.id)
    assert _shape(bulk)[2:] == _shape(again)[2:]
    assert bulk.artifacts[1].region_id == bulk.regions[1].id
    assert session.scalar(select(func.count()).select_from(Inspection)) == 2
    # A repeat of the whole batch stores nothing new.
    assert repo.insert_inspections(session, [_rich_item(world, "bulk-1")]) == [ids[0]]


def test_bulk_insert_survives_a_concurrent_writer(
    session: Session, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key stored by another writer between the check and the insert: its id, no dup."""
    first = repo.insert_inspections(session, [_rich_item(world, "race")])[0]
    session.commit()
    real = ingest._existing_ids
    calls = {"n": 0}

    def blind_once(s: Session, items: object) -> dict[tuple[int, str], int]:
        calls["n"] += 1
        return {} if calls["n"] == 1 else real(s, items)  # type: ignore[arg-type]

    monkeypatch.setattr(ingest, "_existing_ids", blind_once)
    ids = repo.insert_inspections(session, [_rich_item(world, "new"), _rich_item(world, "race")])
    session.commit()
    assert ids[1] == first
    assert session.scalar(select(func.count()).select_from(Inspection)) == 2


def test_insert_new_stores_what_the_orm_path_stores(session: Session, world: World) -> None:
    """The no-savepoint fast path: passing and rich rows as the ORM stores them; a stored key
    refuses the batch (the caller then rolls back and uses ``insert_inspections``)."""
    plain = dataclasses.replace(
        _rich_item(world, "plain"), regions=(), artifacts=(), verdict="pass"
    )
    repo.record_inspections(
        session, [_rich_item(world, "orm"), dataclasses.replace(plain, idempotency_key="orm-p")]
    )
    repo.insert_new_inspections(session, [plain, _rich_item(world, "fast"), plain])
    session.commit()
    session.expunge_all()

    def by_key(key: str) -> Inspection:
        row = session.scalars(select(Inspection).where(Inspection.idempotency_key == key)).one()
        return repo.get_inspection(session, row.id)

    assert _shape(by_key("fast"))[2:] == _shape(by_key("orm"))[2:]
    assert _shape(by_key("plain"))[2:] == _shape(by_key("orm-p"))[2:]
    assert session.scalar(select(func.count()).select_from(Inspection)) == 4
    with pytest.raises(IntegrityError):
        repo.insert_new_inspections(session, [_rich_item(world, "fast")])


def test_review_queue_is_served_by_an_index(session: Session, world: World) -> None:
    """The review queue must not sort the table: the planner walks the review index."""
    if session.get_bind().dialect.name != "sqlite":
        pytest.skip("plan check is written for SQLite; PostgreSQL plans depend on statistics")
    captured: list[tuple[str, object]] = []
    engine = session.get_bind()

    def grab(_conn: object, _cursor: object, statement: str, params: object, *_: object) -> None:
        if "FROM inspection" in statement and "ORDER BY inspection.has_unknown" in statement:
            captured.append((statement, params))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        repo.review_queue(session, repo.QueueFilters(station_id=world.station_id), limit=5)
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    assert captured
    statement, params = captured[0]
    rows = session.connection().exec_driver_sql(
        "EXPLAIN QUERY PLAN " + statement,
        params,  # type: ignore[arg-type]
    )
    plan = " | ".join(str(row[-1]) for row in rows)
    assert "ix_inspection_station_id_has_unknown_norm_score_id" in plan
    assert "TEMP B-TREE FOR ORDER BY" not in plan
