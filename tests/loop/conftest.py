"""Loop test helpers: a migrated SQLite database, an artifact store, and recorded inspections.

:func:`record` stores an inspection the way the station's persist stage does (frame as JPEG,
strongest region first with its crop), so dataset assembly reads exactly what stations write.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from inspection.db import migrate, repo
from inspection.db.engine import make_engine, make_session_factory, run_in_transaction
from inspection.db.models import ArtifactKind, Role, Verdict
from inspection.storage import LocalArtifactStore

T0 = dt.datetime(2025, 3, 1, 8, 0, tzinfo=dt.UTC)
_keys = itertools.count()


@dataclass
class LoopDb:
    """A migrated database, its sessions, an artifact store and two operators."""

    engine: Engine
    factory: sessionmaker[Session]
    store: LocalArtifactStore
    station_id: int
    operators: tuple[int, int]


@pytest.fixture
def loop_db(tmp_path: Path) -> Iterator[LoopDb]:
    engine = make_engine(f"sqlite:///{tmp_path / 'loop.db'}")
    migrate.upgrade(engine)
    factory = make_session_factory(engine)

    def setup(session: Session) -> tuple[int, int, int]:
        station = repo.upsert_station(session, name="s1", line_name="l1")
        a = repo.create_user(session, username="olga", role=Role.OPERATOR)
        b = repo.create_user(session, username="otto", role=Role.OPERATOR)
        return station.id, a.id, b.id

    station_id, a, b = run_in_transaction(factory, setup)
    yield LoopDb(engine, factory, LocalArtifactStore(tmp_path / "artifacts"), station_id, (a, b))
    engine.dispose()


def _jpeg(store: LocalArtifactStore, image: np.ndarray) -> repo.ArtifactData:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    stored = store.put_bytes(buf.tobytes(), ext="jpg")
    return repo.ArtifactData.from_stored(
        stored, kind=ArtifactKind.FRAME, width_px=image.shape[1], height_px=image.shape[0]
    )


def record(
    db: LoopDb,
    image: np.ndarray | None,
    *,
    flagged: bool,
    region: tuple[int, int, int, int] | None = None,
    crop: np.ndarray | None = None,
    station_id: int | None = None,
) -> int:
    """Store one inspection (frame when ``image`` is given); returns its id."""
    artifacts: list[repo.ArtifactData] = []
    regions: list[repo.RegionData] = []
    if image is not None:
        artifacts.append(_jpeg(db.store, image))
    if region is not None:
        x, y, w, h = region
        regions.append(repo.RegionData(x=x, y=y, w=w, h=h, area_px=float(w * h)))
        if crop is not None:
            _, buf = cv2.imencode(".png", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            stored = db.store.put_bytes(buf.tobytes(), ext="png")
            artifacts.append(
                repo.ArtifactData.from_stored(stored, kind=ArtifactKind.CROP, region_index=0)
            )
    n = next(_keys)

    def tx(session: Session) -> int:
        row = repo.record_inspection(
            session,
            repo.InspectionData(
                station_id=station_id or db.station_id,
                captured_at=T0 + dt.timedelta(seconds=n),
                frame_ref=f"test:{n}",
                model_version_id=None,
                raw_score=0.9 if flagged else 0.1,
                norm_score=0.9 if flagged else 0.1,
                verdict=Verdict.FAIL if flagged else Verdict.PASS,
                latency_ms=1.0,
                idempotency_key=f"k{n}",
                regions=regions,
                artifacts=artifacts,
            ),
        )
        return row.id

    return run_in_transaction(db.factory, tx)


def label(
    db: LoopDb, inspection_id: int, verdict: str, defect_type: str | None = None, user: int = 0
) -> None:
    """Operator ``user`` (0 or 1) labels an inspection."""
    run_in_transaction(
        db.factory,
        lambda s: repo.add_label(
            s,
            inspection_id=inspection_id,
            user_id=db.operators[user],
            verdict=verdict,
            defect_type=defect_type,
        ),
    )
