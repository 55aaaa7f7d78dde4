"""Pipeline behaviour with a fake model: accounting, persistence, artifacts, typing, reload."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from inspection.data.synthetic import SyntheticLine
from inspection.db import repo
from inspection.db.engine import run_in_transaction
from inspection.db.models import (
    Artifact,
    ArtifactKind,
    DefectRegion,
    Inspection,
    ModelStatus,
    ModelVersion,
)
from inspection.station.regions import find_regions
from tests.station.conftest import (
    AsyncFakeLoader,
    FakeLoader,
    assert_accounted,
    count_rows,
    make_config,
    make_station,
    write_fake_bundle,
)
from tests.station.sources_fakes import ScriptedSource, flat


def test_synthetic_run_persists_every_frame(tmp_path: Path, db) -> None:
    _, factory = db
    station = make_station(make_config(tmp_path), factory)
    stats = station.run()
    assert_accounted(stats)
    c = stats["counters"]
    assert c["captured"] == 20 and c["persisted"] == 20 and c["dropped"] == 0
    assert count_rows(factory) == 20
    with factory() as s:
        rows = list(s.scalars(select(Inspection)))
        assert {r.model_version_id for r in rows} == {stats["model_version_id"]}
        assert all(r.frame_ref.startswith("synthetic:disc:3:") for r in rows)
        assert len({r.idempotency_key for r in rows}) == 20
        version = s.get(ModelVersion, stats["model_version_id"])
        assert version is not None and version.status == ModelStatus.ACTIVE
    assert set(stats["latency_ms"]) >= {"queue", "infer", "verdict", "db_write", "end_to_end"}


def test_anomalous_frames_get_regions_artifacts_and_types(tmp_path: Path, db) -> None:
    _, factory = db
    bright = flat(40)
    bright[8:16, 8:16] = 255  # one defect blob; mean brightness still low ...
    steps = [flat(40), flat(220), flat(40)]  # ... so only the all-bright frame is anomalous
    calls: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def classifier(crop: np.ndarray, amap: np.ndarray) -> tuple[str | None, float, bool]:
        calls.append((crop.shape, amap.shape))
        return ("scratch", 0.9, False)

    cfg = make_config(tmp_path, retention={"frames": "anomalous", "pass_heatmap_size": 8})
    station = make_station(cfg, factory, source=ScriptedSource(steps), classifier=classifier)
    stats = station.run()
    assert_accounted(stats)
    assert stats["counters"]["anomalous"] == 1
    assert calls and calls[0][0][:2] == calls[0][1]
    with factory() as s:
        fail = s.scalars(select(Inspection).where(Inspection.verdict == "fail")).one()
        regions = list(s.scalars(select(DefectRegion).where(DefectRegion.inspection_id == fail.id)))
        assert regions and regions[0].defect_type is not None
        assert regions[0].defect_type.name == "scratch" and not fail.has_unknown
        kinds = {
            a.kind for a in s.scalars(select(Artifact).where(Artifact.inspection_id == fail.id))
        }
        assert kinds == {ArtifactKind.FRAME, ArtifactKind.HEATMAP, ArtifactKind.CROP}
        passes = list(s.scalars(select(Inspection).where(Inspection.verdict == "pass")))
        for p in passes:  # passes keep only the small heatmap
            arts = list(s.scalars(select(Artifact).where(Artifact.inspection_id == p.id)))
            assert [(a.kind, a.width_px) for a in arts] == [(ArtifactKind.HEATMAP, 8)]
            assert arts[0].heatmap_max is not None


@pytest.mark.parametrize("heatmaps", ["all", "anomalous", "none"])
def test_heatmap_retention_per_verdict(tmp_path: Path, db, heatmaps: str) -> None:
    """Full heatmaps are stored for the verdicts the retention names, none for the others
    (the scoring worker copies only the maps that will be stored)."""
    _, factory = db
    steps = [flat(10), flat(230), flat(10)]
    cfg = make_config(tmp_path, retention={"frames": "none", "heatmaps": heatmaps})
    assert_accounted(make_station(cfg, factory, source=ScriptedSource(steps)).run())
    with factory() as s:
        for row in s.scalars(select(Inspection)):
            arts = list(s.scalars(select(Artifact).where(Artifact.inspection_id == row.id)))
            kept = [a for a in arts if a.kind == ArtifactKind.HEATMAP]
            want = heatmaps == "all" or (heatmaps == "anomalous" and row.verdict == "fail")
            assert len(kept) == int(want), (row.verdict, heatmaps)


def test_unknown_type_marks_inspection(tmp_path: Path, db) -> None:
    _, factory = db
    station = make_station(
        make_config(tmp_path),
        factory,
        source=ScriptedSource([flat(230)]),
        classifier=lambda crop, amap: ("crack", 0.2, True),
    )
    assert_accounted(station.run())
    with factory() as s:
        row = s.scalars(select(Inspection)).one()
        assert row.has_unknown and row.verdict == "fail"


def test_slow_scoring_drops_frames_explicitly(tmp_path: Path, db) -> None:
    _, factory = db
    cfg = make_config(
        tmp_path,
        camera={"count": 60, "fps": 400, "overflow": "drop"},
        pipeline={"queue_size": 2},
    )
    station = make_station(cfg, factory, model_loader=FakeLoader(delay_s=0.02))
    stats = station.run()
    assert_accounted(stats)
    c = stats["counters"]
    assert c["dropped"] > 0 and c["captured"] == 60
    assert count_rows(factory) == c["scored"] == c["persisted"]


def test_bad_preprocess_is_counted(tmp_path: Path, db) -> None:
    _, factory = db
    cfg = make_config(tmp_path, roi={"x": 40, "y": 40, "w": 8, "h": 8})  # outside a 32 px frame
    station = make_station(cfg, factory, source=ScriptedSource([flat(10), flat(20)]))
    stats = station.run()
    assert_accounted(stats)
    assert stats["counters"]["bad_frames"] == 2 and stats["counters"]["scored"] == 0


def test_database_thresholds_win_over_config(tmp_path: Path, db) -> None:
    _, factory = db
    cfg = make_config(tmp_path, image_threshold=0.9)
    gate = threading.Semaphore(0)
    steps = [flat(160)] * 4  # FakeModel: normalised score 0.5 + 160/255 - 0.5 = 0.627
    station = make_station(cfg, factory, source=ScriptedSource(steps, gate=gate))
    station.start()
    assert station.thresholds.image == 0.9
    gate.release()
    _wait(lambda: station.counters.get("persisted") == 1)
    run_in_transaction(
        factory,
        lambda s: repo.set_station_thresholds(
            s,
            station_id=station.station_id,
            image_threshold=0.6,
            pixel_threshold=None,
            changed_by="test",
        ),
    )
    _wait(lambda: station.thresholds.image == 0.6)
    gate.release(3)
    _wait(lambda: station.capture_finished)
    stats = station.stop()
    assert_accounted(stats)
    with factory() as s:
        verdicts = [r.verdict.value for r in s.scalars(select(Inspection).order_by(Inspection.id))]
    assert verdicts == ["pass", "fail", "fail", "fail"]


def test_hot_reload_bundle_swaps_without_losing_frames(tmp_path: Path, db) -> None:
    _, factory = db
    loader = FakeLoader()
    gate = threading.Semaphore(0)
    cfg = make_config(tmp_path)
    station = make_station(
        cfg, factory, model_loader=loader, source=ScriptedSource([flat(9)] * 10, gate=gate)
    )
    station.start()
    first = station.active.version_id
    gate.release(5)
    _wait(lambda: station.counters.get("persisted") == 5)
    time.sleep(0.01)  # a new mtime even on coarse file systems
    write_fake_bundle(cfg.detector.path, created="2024-02-02T00:00:00+00:00")  # type: ignore[arg-type]
    _wait(lambda: station.active.version_id != first)
    gate.release(5)
    _wait(lambda: station.capture_finished)
    stats = station.stop()
    assert_accounted(stats)
    assert stats["counters"]["persisted"] == 10 and stats["counters"]["model_reloads"] == 1
    with factory() as s:
        versions = [
            r.model_version_id for r in s.scalars(select(Inspection).order_by(Inspection.id))
        ]
        old = s.get(ModelVersion, first)
        assert old is not None and old.status == ModelStatus.RETIRED
    assert versions == [first] * 5 + [stats["model_version_id"]] * 5
    assert len(loader.loaded) == 2


def test_hot_reload_from_database_activation(tmp_path: Path, db) -> None:
    _, factory = db
    gate = threading.Semaphore(0)
    first_bundle = write_fake_bundle(tmp_path / "v1")
    second_bundle = write_fake_bundle(tmp_path / "v2")
    cfg = make_config(tmp_path, detector={"source": "database", "path": None})

    def setup(s):
        ids = __import__("inspection.station.persist", fromlist=["x"]).register_station(s, cfg)
        ids_v = []
        for b in (first_bundle, second_bundle):
            v = repo.register_model_version(
                s,
                station_id=ids.station_id,
                name=b.name,
                detector_type="fake",
                artifact_path=str(b),
            )
            ids_v.append(v.id)
        repo.set_model_status(s, model_version_id=ids_v[0], status="active")
        return ids_v

    v1, v2 = run_in_transaction(factory, setup)
    loader = FakeLoader()
    station = make_station(
        cfg, factory, model_loader=loader, source=ScriptedSource([flat(9)] * 4, gate=gate)
    )
    station.start()
    assert station.active.version_id == v1
    gate.release(2)
    _wait(lambda: station.counters.get("persisted") == 2)
    run_in_transaction(
        factory, lambda s: repo.set_model_status(s, model_version_id=v2, status="active")
    )
    _wait(lambda: station.active.version_id == v2)
    gate.release(2)
    _wait(lambda: station.capture_finished)
    stats = station.stop()
    assert_accounted(stats)
    with factory() as s:
        versions = [
            r.model_version_id for r in s.scalars(select(Inspection).order_by(Inspection.id))
        ]
    assert versions == [v1, v1, v2, v2]
    assert loader.loaded == [first_bundle, second_bundle]


def test_find_regions_boxes_and_fallback() -> None:
    amap = np.zeros((32, 32), np.float32)
    amap[2:6, 3:9] = 1.0
    amap[20:30, 20:22] = 2.0
    boxes = find_regions(amap, 0.5)
    assert [(b.x, b.y, b.w, b.h, b.area) for b in boxes] == [(20, 20, 2, 10, 20), (3, 2, 6, 4, 24)]
    weak = np.zeros((16, 16), np.float32)
    weak[5, 5] = 0.1
    (only,) = find_regions(weak, 0.5)
    assert (only.x, only.y, only.w, only.h) == (5, 5, 1, 1)


def test_webhook_payloads(tmp_path: Path, db) -> None:
    import http.server

    received: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _, factory = db
        url = f"http://127.0.0.1:{server.server_port}/hook"
        cfg = make_config(tmp_path, outputs={"webhook": {"url": url}})
        station = make_station(cfg, factory, source=ScriptedSource([flat(10), flat(240)]))
        station.start()
        _wait(lambda: station.capture_finished)
        _wait(lambda: station.counters.get("webhook_sent") == 1)
        stats = station.stop()
    finally:
        server.shutdown()
    assert_accounted(stats)
    assert (
        len(received) == 1 and received[0]["verdict"] == "fail" and received[0]["station"] == "s1"
    )


def _wait(cond, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_classifier_from_config(tmp_path: Path, db) -> None:
    import pytest

    from inspection.errors import ModelFileError
    from inspection.station.classify import load_classifier

    _, factory = db
    loader = "tests.station.sources_fakes:constant_classifier"
    cfg = make_config(tmp_path, classifier={"path": str(tmp_path / "dent"), "loader": loader})
    station = make_station(cfg, factory, source=ScriptedSource([flat(250)]))
    assert_accounted(station.run())
    with factory() as s:
        region = s.scalars(select(DefectRegion)).one()
        assert region.defect_type is not None and region.defect_type.name == "dent"
    missing = make_config(tmp_path, classifier={"path": str(tmp_path / "nope")})
    with pytest.raises(ModelFileError):
        load_classifier(missing)  # the default loader: an exported typing bundle
    point = {"path": str(tmp_path / "dent"), "loader": loader, "known_accept_rate": 0.8}
    assert (
        load_classifier(make_config(tmp_path, classifier=point))(
            np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.float32)
        )[0]
        == "dent@0.8"
    )  # the station's operating point reaches the loader


def test_parallel_scoring_workers(tmp_path: Path, db) -> None:
    _, factory = db
    loader = FakeLoader(delay_s=0.01)
    cfg = make_config(tmp_path, camera={"count": 40}, pipeline={"infer_workers": 2})
    station = make_station(cfg, factory, model_loader=loader)
    stats = station.run()
    assert_accounted(stats)
    assert stats["counters"]["persisted"] == 40 == count_rows(factory)
    assert len(loader.loaded) == 2  # one compiled model per worker
    models = station.active.models
    assert len(models) == 2 and all(m.calls > 0 for m in models)  # type: ignore[attr-defined]


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_requests_in_flight_per_worker(tmp_path: Path, db, depth: int) -> None:
    """With ``requests_per_worker`` N a worker submits the next batch before finishing the
    last, on N model instances (requests), never two at once on one; nothing is lost and the
    results keep their own scores."""
    _, factory = db
    loader = AsyncFakeLoader()
    cfg = make_config(
        tmp_path,
        camera={"count": 60, "overflow": "wait"},
        pipeline={"infer_workers": 2, "requests_per_worker": depth},
    )
    station = make_station(cfg, factory, model_loader=loader)
    stats = station.run()
    assert_accounted(stats)
    assert stats["counters"]["persisted"] == 60 == count_rows(factory)
    assert len(station.active.models) == 2 * depth == len(loader.instances)
    assert sum(m.submitted for m in loader.instances) == 60
    assert all(m.in_flight == 0 for m in loader.instances)
    assert all(m.calls == m.submitted + 1 for m in loader.instances)  # one warm-up each
    line = SyntheticLine("disc", size=32, seed=3, defect_rate=0.2)
    with factory() as s:
        rows = list(s.scalars(select(Inspection)))
    for row in rows:  # each result carries the score of its own frame
        index = int(row.frame_ref.rsplit(":", 1)[1].split("(")[0])
        expected = line.sample(index).image.astype(np.float32).mean() / 255.0
        assert row.raw_score == pytest.approx(expected, rel=1e-5)


def test_persist_linger_writes_fewer_larger_transactions(tmp_path: Path, db) -> None:
    """Results trickling in one by one are gathered for ``persist_linger_ms`` per transaction."""
    from inspection.station.persist import DatabaseSink

    _, factory = db
    sizes: dict[float, list[int]] = {}

    class Recording(DatabaseSink):
        def __init__(self, factory: Any, linger: float) -> None:
            super().__init__(factory)
            self.linger = linger

        def write(self, items: Any) -> None:
            sizes.setdefault(self.linger, []).append(len(items))
            super().write(items)

    for linger in (0.0, 500.0):
        cfg = make_config(
            tmp_path / str(linger),
            camera={"fps": 100.0, "count": 20},
            pipeline={"persist_linger_ms": linger, "persist_batch": 8},
        )
        stats = make_station(cfg, factory, sink=Recording(factory, linger)).run()
        assert_accounted(stats)
        assert stats["counters"]["persisted"] == 20
    assert sum(sizes[500.0]) == sum(sizes[0.0]) == 20
    assert max(sizes[500.0]) == 8  # batches fill up to persist_batch, no further
    assert len(sizes[500.0]) <= 4 < len(sizes[0.0])


@pytest.mark.parametrize("fit", ["stretch", "pad"])
def test_letterboxed_model_regions_and_heatmap_land_on_the_frame(
    tmp_path: Path, db, fit: str
) -> None:
    """A long, narrow frame: regions in frame pixels and the stored heatmap, laid over the frame
    as the UI does (resized to the frame), cover the bright spot in either fit."""
    import cv2

    from inspection.storage import LocalArtifactStore, decode_heatmap
    from tests.station.conftest import FakeModel

    _, factory = db
    frame = np.full((48, 144, 3), 150, np.uint8)  # mean brightness > 0.5: anomalous
    frame[16:32, 96:120] = 255

    def loader(bundle: Path, settings: Any, batch_size: int | None) -> FakeModel:
        model = FakeModel(size=64)
        model.fit = fit  # type: ignore[attr-defined]
        model.pixel_threshold = 0.9  # only the spot is a region
        return model

    cfg = make_config(tmp_path, retention={"frames": "none", "heatmaps": "all"})
    station = make_station(cfg, factory, source=ScriptedSource([frame]), model_loader=loader)
    stats = station.run()
    assert_accounted(stats)
    assert stats["counters"]["anomalous"] == 1
    with factory() as s:
        (region,) = s.scalars(select(DefectRegion)).all()
        (heat,) = s.scalars(select(Artifact).where(Artifact.kind == ArtifactKind.HEATMAP)).all()
        key, shape = heat.store_key, (heat.height_px, heat.width_px)
    assert abs(region.x - 96) <= 3 and abs(region.y - 16) <= 3
    assert abs(region.w - 24) <= 5 and abs(region.h - 16) <= 5
    assert shape == ((21, 64) if fit == "pad" else (64, 64))  # the valid box only
    heatmap = decode_heatmap(LocalArtifactStore(cfg.artifacts_dir).read(key))
    over_frame = cv2.resize(heatmap, (144, 48), interpolation=cv2.INTER_LINEAR)
    assert over_frame[18:30, 99:117].min() > 0.9
    assert over_frame[:, :90].max() < 0.7 and over_frame[:, 126:].max() < 0.7
