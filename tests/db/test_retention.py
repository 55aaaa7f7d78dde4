"""Retention keeps defects, labelled and training items, deletes old passes and their files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from inspection.db import repo
from inspection.db.models import Artifact, ArtifactKind, DefectRegion, Inspection, Role, Verdict
from inspection.db.retention import apply_retention, apply_retention_policies
from inspection.storage import LocalArtifactStore, encode_heatmap

NOW = dt.datetime(2025, 6, 30, 12, 0, tzinfo=dt.UTC)


def test_retention(session: Session, tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    station = repo.upsert_station(session, name="s1", line_name="l", retention_days=30)
    other = repo.upsert_station(session, name="s2", line_name="l")
    user = repo.create_user(session, username="olga", role=Role.OPERATOR)
    shared = store.put_bytes(b"identical reference frame", ext="png")

    made: list[str] = []

    def make(key: str, days_old: float, verdict: str, *, station_id: int = station.id) -> int:
        made.append(key)
        frame = store.put_bytes(f"frame {key}".encode(), ext="png")
        heatmap = store.put_bytes(encode_heatmap([[float(len(made))]]), ext="npz")
        inspection = repo.record_inspection(
            session,
            repo.InspectionData(
                station_id=station_id,
                captured_at=NOW - dt.timedelta(days=days_old),
                frame_ref=frame.key,
                model_version_id=None,
                raw_score=1.0,
                norm_score=0.9 if verdict == "fail" else 0.1,
                verdict=verdict,
                latency_ms=5,
                idempotency_key=key,
                regions=[repo.RegionData(x=0, y=0, w=1, h=1, area_px=1)],
                artifacts=[
                    repo.ArtifactData.from_stored(frame, kind=ArtifactKind.FRAME),
                    repo.ArtifactData.from_stored(heatmap, kind="heatmap"),
                    repo.ArtifactData.from_stored(shared, kind="overlay"),
                ],
            ),
        )
        return inspection.id

    old_pass = [make(f"old-pass-{i}", 40 + i, "pass") for i in range(7)]
    recent_pass = make("recent-pass", 10, "pass")
    old_fail = make("old-fail", 60, "fail")
    old_labelled = make("old-labelled", 50, "pass")
    old_trained = make("old-trained", 50, "pass")
    other_station_old = make("other-old", 90, "pass", station_id=other.id)
    repo.add_label(session, inspection_id=old_labelled, user_id=user.id, verdict="pass")
    repo.create_retrain_job(session, station_id=station.id, training_inspection_ids=[old_trained])
    session.commit()
    doomed_files = [
        a.store_key
        for a in session.scalars(select(Artifact).where(Artifact.inspection_id.in_(old_pass)))
        if a.store_key != shared.key
    ]
    assert len(doomed_files) == 14

    result = apply_retention(session, store, station.id, 30, NOW, batch_size=3)

    assert result.inspections_deleted == 7
    assert result.artifact_rows_deleted == 21
    assert result.files_deleted == 14
    assert result.files_missing == 0
    remaining = set(session.scalars(select(Inspection.id)))
    assert remaining == {recent_pass, old_fail, old_labelled, old_trained, other_station_old}
    assert not any(store.exists(key) for key in doomed_files)
    assert store.exists(shared.key)  # still referenced by kept inspections
    for key in session.scalars(select(Artifact.store_key)):
        assert store.exists(key)
    orphans = session.scalar(
        select(func.count())
        .select_from(DefectRegion)
        .where(~DefectRegion.inspection_id.in_(select(Inspection.id)))
    )
    assert orphans == 0

    again = apply_retention(session, store, station.id, 30, NOW)
    assert again.inspections_deleted == 0

    # Policies use each station's retention_days; s2 has none, so it keeps everything.
    results = apply_retention_policies(session, store, NOW + dt.timedelta(days=100))
    assert [r.station_id for r in results] == [station.id]
    kept = set(session.scalars(select(Inspection.id)))
    assert kept == {old_fail, old_labelled, old_trained, other_station_old}
    verdicts = set(session.scalars(select(Inspection.verdict).where(Inspection.id.in_(kept))))
    assert verdicts == {Verdict.FAIL, Verdict.PASS}


def test_retention_rejects_bad_arguments(session: Session, tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    station = repo.upsert_station(session, name="s1", line_name="l")
    session.commit()
    with pytest.raises(ValueError, match="keep_days"):
        apply_retention(session, store, station.id, -1, NOW)
    with pytest.raises(ValueError, match="aware"):
        apply_retention(session, store, station.id, 1, dt.datetime(2025, 1, 1))
