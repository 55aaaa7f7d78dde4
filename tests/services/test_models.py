"""Promote and roll back through :mod:`inspection.services.models` (used by the closed loop)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from inspection.db import migrate, repo
from inspection.db.engine import make_engine, make_session_factory
from inspection.db.models import AuditLog
from inspection.errors import InvalidStateError, NotFoundError
from inspection.services.models import promote_model, rollback_candidates, rollback_model


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate.upgrade(engine)
    with make_session_factory(engine)() as session:
        yield session
    engine.dispose()


def _versions(session: Session, station_id: int, n: int) -> list[int]:
    return [
        repo.register_model_version(
            session,
            station_id=station_id,
            name=f"v{i}",
            detector_type="padim",
            artifact_path=f"m/{i}",
        ).id
        for i in range(n)
    ]


def test_promote_then_roll_back(db: Session) -> None:
    station = repo.upsert_station(db, name="s1", line_name="l1")
    other = repo.upsert_station(db, name="s2", line_name="l1")
    v0, v1, v2, fresh = _versions(db, station.id, 4)
    (w0,) = _versions(db, other.id, 1)
    with pytest.raises(InvalidStateError, match="no earlier"):
        rollback_model(db, station_id=station.id, actor="test")
    for version_id in (v0, v1, v2):
        promote_model(db, model_version_id=version_id, actor="test")
    assert repo.get_active_model(db, station.id).id == v2  # type: ignore[union-attr]
    assert [v.id for v in rollback_candidates(db, station_id=station.id)] == [v1, v0]
    assert rollback_model(db, station_id=station.id, actor="test").id == v1
    assert repo.get_active_model(db, station.id).id == v1  # type: ignore[union-attr]
    assert rollback_model(db, station_id=station.id, actor="test", to_version_id=v0).id == v0
    with pytest.raises(InvalidStateError, match="already active"):
        promote_model(db, model_version_id=v0, actor="test")
    with pytest.raises(InvalidStateError, match="belongs to station"):
        rollback_model(db, station_id=station.id, actor="test", to_version_id=w0)
    with pytest.raises(InvalidStateError, match="never active"):
        rollback_model(db, station_id=station.id, actor="test", to_version_id=fresh)
    with pytest.raises(NotFoundError):
        promote_model(db, model_version_id=999, actor="test")
    db.flush()
    actions = [
        row.action
        for row in db.scalars(
            select(AuditLog).where(
                AuditLog.action.in_(["model_version.promote", "station.rollback"])
            )
        )
    ]
    assert actions.count("model_version.promote") == 3
    assert actions.count("station.rollback") == 2


def test_versions_without_a_station_cannot_be_promoted(db: Session) -> None:
    version = repo.register_model_version(
        db, station_id=None, name="loose", detector_type="padim", artifact_path="m/x"
    )
    with pytest.raises(InvalidStateError, match="no station"):
        promote_model(db, model_version_id=version.id, actor="test")
