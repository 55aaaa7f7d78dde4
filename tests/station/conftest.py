"""Station test helpers: a migrated SQLite database, fake bundles and a fake (NumPy) model.

The fake model makes pipeline tests take milliseconds per frame and lets them decide which
frames are anomalous: the raw score is the mean brightness of the frame in [0, 1] and the
anomaly map is the per-pixel brightness, with the image threshold at ``threshold``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from inspection.db import migrate
from inspection.db.engine import make_engine, make_session_factory
from inspection.db.models import Inspection
from inspection.runtime import BUNDLE_FORMAT, Prediction
from inspection.station.config import StationConfig, parse_station_config
from inspection.station.pipeline import Station
from inspection.storage import LocalArtifactStore


class FakeModel:
    """A stand-in for :class:`OpenVinoModel`: brightness is the anomaly score."""

    def __init__(
        self, size: int = 32, threshold: float = 0.5, delay_s: float = 0.0, tag: str = ""
    ) -> None:
        self.size = size
        self.image_threshold = threshold
        self.pixel_threshold = threshold
        self.delay_s = delay_s
        self.tag = tag
        self.calls = 0

    def predict(self, images: np.ndarray) -> Prediction:
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        amap = images.astype(np.float32).mean(axis=3) / 255.0
        raw = amap.reshape(len(images), -1).mean(axis=1).astype(np.float32)
        score = np.clip(raw - self.image_threshold + 0.5, 0, 1).astype(np.float32)
        return Prediction(raw, score, amap, raw > self.image_threshold)


class AsyncFakeModel(FakeModel):
    """:class:`FakeModel` with ``submit``/``wait`` and a record of how many run at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_flight = 0
        self.max_in_flight = 0
        self.submitted = 0

    def submit(self, images: np.ndarray) -> _FakePending:
        if self.in_flight:
            raise AssertionError("one request per model instance: submitted while busy")
        self.in_flight += 1
        self.submitted += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return _FakePending(self, np.array(images))


class _FakePending:
    def __init__(self, model: AsyncFakeModel, images: np.ndarray) -> None:
        self.model, self.images = model, images

    def wait(self, copy_maps: bool = True) -> Prediction:
        self.model.in_flight -= 1
        return self.model.predict(self.images)


class AsyncFakeLoader:
    """Loads one :class:`AsyncFakeModel`; further requests are its siblings (new instances)."""

    def __init__(self) -> None:
        self.instances: list[AsyncFakeModel] = []

    def __call__(self, bundle: Path, settings: Any, batch_size: int | None) -> AsyncFakeModel:
        model = AsyncFakeModel(tag=str(bundle))
        self.instances.append(model)
        return model


def write_fake_bundle(folder: Path, created: str = "2024-01-01T00:00:00+00:00") -> Path:
    """A bundle folder with only ``model.json`` (enough for the fake loader)."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": BUNDLE_FORMAT,
        "detector": "fake",
        "input": {"size": 32},
        "precision": "fp32",
        "created": created,
        "calibration": {"image_threshold": 0.5, "pixel_threshold": 0.5},
    }
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


class FakeLoader:
    """Model loader returning :class:`FakeModel` objects; records what it loaded."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.loaded: list[Path] = []
        self.lock = threading.Lock()

    def __call__(self, bundle: Path, settings: Any, batch_size: int | None) -> FakeModel:
        with self.lock:
            self.loaded.append(Path(bundle))
        return FakeModel(tag=str(bundle), **self.kwargs)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[Engine, sessionmaker[Session]]]:
    """A migrated SQLite database file and its session factory."""
    engine = make_engine(f"sqlite:///{tmp_path / 'station.db'}")
    migrate.upgrade(engine)
    yield engine, make_session_factory(engine)
    engine.dispose()


def make_config(tmp_path: Path, **overrides: Any) -> StationConfig:
    """A station config on a 32 px synthetic camera with a fake bundle; ``overrides`` merge in.

    One scoring worker with two requests at batch 1 unless overridden: the pipeline tests
    count model loads and check capture order, which the ``auto`` settings
    (:mod:`inspection.station.tuning`, tested on their own) would make depend on the cores.
    """
    from inspection.station.config import deep_merge

    bundle = tmp_path / "bundle"
    if not (bundle / "model.json").exists():
        write_fake_bundle(bundle)
    base: dict[str, Any] = {
        "id": "s1",
        "line": "l1",
        "camera": {"type": "synthetic", "size": 32, "seed": 3, "defect_rate": 0.2, "count": 20},
        "detector": {"source": "bundle", "path": str(bundle)},
        "artifacts_dir": str(tmp_path / "artifacts"),
        "pipeline": {
            "reload_poll_s": 0.05,
            "stats_interval_s": 0,
            "persist_retry_s": 5,
            "batch_size": 1,
            "infer_workers": 1,
            "requests_per_worker": 2,
        },
    }
    if overrides.get("camera", {}).get("type", "synthetic") != "synthetic":
        base["camera"] = {}
    return parse_station_config(deep_merge(base, overrides))


def make_station(config: StationConfig, factory: sessionmaker[Session], **kwargs: Any) -> Station:
    kwargs.setdefault("model_loader", FakeLoader())
    return Station(
        config,
        session_factory=factory,
        store=LocalArtifactStore(config.artifacts_dir),
        **kwargs,
    )


def count_rows(factory: sessionmaker[Session]) -> int:
    with factory() as s:
        return int(s.scalar(select(func.count()).select_from(Inspection)) or 0)


def assert_accounted(stats: dict[str, Any]) -> None:
    """Every captured frame is scored, dropped or bad; every scored one persisted or failed."""
    c = stats["counters"]
    assert stats["in_flight"] == 0 and stats["persist_in_flight"] == 0
    assert c["captured"] == c["scored"] + c["dropped"] + c["bad_frames"], c
    assert c["scored"] == c["persisted"] + c["persist_failures"], c
