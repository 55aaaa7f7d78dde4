"""The station on a real OpenVINO bundle (PaDiM, 64 px), and the torch-free hot path.

The bundle is trained once per test module (quick config on synthetic parts, a few seconds).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from inspection.data.synthetic import SyntheticLine
from inspection.db.models import Artifact, Inspection
from inspection.runtime import read_metadata
from tests.conftest import REPO_ROOT, synthetic_set
from tests.station.conftest import assert_accounted, count_rows, make_config
from tests.station.conftest import make_station as _make_station


@pytest.fixture(scope="module")
def padim_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inspection import training
    from inspection.detectors import registry

    cls = registry.get("padim")
    trained = training.train(cls(cls.quick_config()), synthetic_set(64, 32, 0, seed=5))
    return training.export_openvino(trained, tmp_path_factory.mktemp("padim") / "bundle")


@pytest.mark.parametrize(
    ("hint", "workers", "batch"),
    [("latency", 1, 4), ("throughput", 2, 1), ("latency", 2, 1)],
    ids=["latency", "tput", "latency-2-workers"],
)
def test_station_runs_openvino_bundle(
    tmp_path: Path, db, padim_bundle: Path, hint: str, workers: int, batch: int
) -> None:
    """Every frame scored and stored, with one inference at a time or parallel streams."""
    from inspection.station.scoring_model import load_openvino

    _, factory = db
    cfg = make_config(
        tmp_path,
        camera={"size": 64, "count": 24, "defect_rate": 0.5, "seed": 7},
        detector={"path": str(padim_bundle), "num_threads": 1, "performance_hint": hint},
        pipeline={"batch_size": batch, "infer_workers": workers},
    )
    station = _make_station(cfg, factory, model_loader=load_openvino)
    stats = station.run()
    models = station.active.models
    depth = station.tuning.requests_per_worker
    assert len(models) == workers * depth  # a request per batch in flight
    assert len({id(m.request) for m in models}) == len(models)  # type: ignore[attr-defined]
    if hint == "throughput":  # the workers shared one compiled model, each with its requests
        assert len({id(m.compiled) for m in models}) == 1  # type: ignore[attr-defined]
    else:  # a compiled model per worker, its requests siblings of it, threads not pinned
        assert len({id(m.compiled) for m in models}) == workers  # type: ignore[attr-defined]
        if workers > 1:
            pinned = models[0].compiled.get_property("ENABLE_CPU_PINNING")  # type: ignore[attr-defined]
            assert pinned is False
    assert_accounted(stats)
    c = stats["counters"]
    assert c["persisted"] == 24 == count_rows(factory)
    assert 0 < c["anomalous"] < 24
    with factory() as s:
        fails = list(s.scalars(select(Inspection).where(Inspection.verdict == "fail")))
        assert len(fails) == c["anomalous"]
        assert all(f.regions for f in fails)
        arts = list(s.scalars(select(Artifact)))
    assert {a.inspection_id for a in arts} == {f.id for f in fails}
    assert read_metadata(padim_bundle)["detector"] == "padim"


def test_hot_path_imports_no_torch_or_anomalib(tmp_path: Path, padim_bundle: Path) -> None:
    station_file = tmp_path / "stations" / "line" / "s1.yaml"
    station_file.parent.mkdir(parents=True)
    station_file.write_text(
        textwrap.dedent(
            f"""
            id: s1
            line: line
            camera: {{type: synthetic, size: 64, seed: 2, defect_rate: 0.3}}
            detector: {{source: bundle, path: "{padim_bundle}"}}
            artifacts_dir: "{tmp_path / "artifacts"}"
            pipeline: {{stats_interval_s: 0}}
            """
        )
    )
    db_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    script = textwrap.dedent(
        f"""
        import json, sys
        from inspection.station.cli import app
        app(["run", {str(station_file)!r}, "--db", {db_url!r}, "--init-db", "--max-frames", "12"],
            standalone_mode=False)
        print(json.dumps({{"loaded": [m for m in ("torch", "anomalib") if m in sys.modules]}}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["loaded"] == [], f"the station hot path imported {result['loaded']}"
    from inspection.db.engine import make_engine, make_session_factory

    engine = make_engine(db_url)
    try:
        assert count_rows(make_session_factory(engine)) == 12
    finally:
        engine.dispose()


def test_station_bench_quick(
    tmp_path: Path, padim_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inspection.bench import station_bench

    monkeypatch.chdir(tmp_path)
    workdir = Path("work")  # relative, as on the command line
    shutil.copytree(padim_bundle, workdir / "padim" / "fp32")  # reused: no training here
    payload = station_bench.run(
        ["padim"],
        size=64,
        frames=20,
        variants=(station_bench.Variant(1, None, 1), station_bench.Variant.parse("2:1:2")),
        precisions=("fp32",),
        camera_fps=100.0,
        anomalib_seconds=0.5,
        workdir=workdir,
        results_dir=tmp_path / "results",
        quick=True,
        pairs=2,
        defaults_pairs=0,
    )
    assert payload["errors"] == {}
    assert payload["defaults"] == {} and payload["lean_install_mb"] is None
    (paired,) = payload["paired"]
    assert paired["pairs"] == 2 and paired["variant"] in [r["variant"] for r in payload["runs"]]
    assert paired["min_speedup"] <= paired["median_speedup_vs_anomalib"] <= paired["max_speedup"]
    assert [r["variant"] for r in payload["runs"]] == ["b1 tauto w1 r2", "b2 t1 w2 r2"]
    for row in payload["runs"]:
        sat = row["saturated"]
        assert sat["frames_persisted"] == sat["frames_captured"] == 20
        assert row["frames_per_second"] > 0 and row["anomalib_inferencer_fps"] > 0
        assert row["openvino_ceiling_fps"] > 0 and row["ceiling_vs_anomalib"] > 0
        assert row["cpu_ms_per_frame"] > 0 and row["cpu_bound_fps"] > 0
        assert row["frames_captured"] == row["frames_persisted"] + row["frames_dropped"]
    assert payload["precision"][0]["image_auroc"] > 0.5
    saved = json.loads((tmp_path / "results" / "station.json").read_text())
    assert {"commit", "date", "machine", "runs"} <= saved.keys()
    page = (tmp_path / "results" / "station.md").read_text()
    assert page.startswith("# station") and "## Paired" in page


def test_station_bench_defaults_quick(
    tmp_path: Path, padim_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``defaults`` section: the station at its default settings in a process of its own
    against anomalib's inferencer at its defaults, and the station process's starts and RSS."""
    import sys

    from inspection.bench import station_bench

    monkeypatch.chdir(tmp_path)
    workdir = Path("work")
    shutil.copytree(padim_bundle, workdir / "padim" / "fp32")
    payload = station_bench.run(
        ["padim"],
        size=64,
        frames=20,
        precisions=("fp32",),
        anomalib_seconds=0.5,
        workdir=workdir,
        results_dir=tmp_path / "results",
        quick=True,
        defaults_pairs=2,
        only_defaults=True,
        start_repeats=1,
        lean_python=sys.executable,  # stands in for a lean interpreter: the size is measured
        name="station-defaults",
    )
    assert payload["errors"] == {}
    assert payload["runs"] == [] and payload["paired"] == []  # --only-defaults
    row = payload["defaults"]["padim"]
    assert {
        "frames_per_second",
        "anomalib_default_fps",
        "speedup_median",
        "warm_start_s",
        "cold_start_s",
        "rss_mib",
    } <= row.keys()
    assert row["pairs"] == len(row["runs"]) == 2 and row["all_frames_accounted"]
    assert row["speedup_min"] <= row["speedup_median"] <= row["speedup_max"]
    assert row["frames_per_second"] > 0 and row["anomalib_default_fps"] > 0
    assert row["warm_start_s"] > 0 and row["cold_start_s"] > 0 and row["rss_mib"] > 50
    assert row["tuning"]["batch_size"] >= 1 and row["precision"] in ("f32", "bf16")
    assert "bf16_flip_rate" in row  # the export check's, None where it was not verified
    assert payload["lean_install_mb"] > 0
    saved = json.loads((tmp_path / "results" / "station-defaults.json").read_text())
    assert {"commit", "date", "machine", "defaults", "lean_install_mb"} <= saved.keys()
    page = (tmp_path / "results" / "station-defaults.md").read_text()
    assert "## At its defaults" in page and "## Throughput" not in page


def test_submitted_inference_equals_synchronous(padim_bundle: Path) -> None:
    """``submit(...).wait()`` gives what ``predict`` gives, also with two requests running."""
    from inspection.runtime import OpenVinoModel

    images = np.stack([s.image for s in SyntheticLine("disc", size=64, seed=9).normals(4)])
    model = OpenVinoModel(padim_bundle, num_threads=1)
    twin = model.sibling()
    expected = [model.predict(images[i : i + 1]) for i in range(4)]
    first, second = model.submit(images[0:1]), twin.submit(images[1:2])
    got = [first.wait(), second.wait()]
    third = model.submit(images[2:4])
    got_batch = third.wait()
    for want, have in zip(expected[:2], got, strict=True):
        np.testing.assert_array_equal(have.raw_score, want.raw_score)
        np.testing.assert_array_equal(have.anomaly_map, want.anomaly_map)
        np.testing.assert_array_equal(have.score, want.score)
    np.testing.assert_allclose(
        got_batch.raw_score, np.concatenate([e.raw_score for e in expected[2:]]), rtol=1e-5
    )
    view = twin.submit(images[3:4]).wait(copy_maps=False)  # maps borrowed from the request
    np.testing.assert_array_equal(view.anomaly_map, expected[3].anomaly_map)


def test_static_batch_model_matches_dynamic(padim_bundle: Path) -> None:
    """Compiled for exactly one frame per call (what a batch-1 station loads): same outputs."""
    from inspection.runtime import OpenVinoModel

    image = SyntheticLine("disc", size=64, seed=9).defects(1)[0].image[None]
    dynamic = OpenVinoModel(padim_bundle, num_threads=1).predict(image)
    static = OpenVinoModel(padim_bundle, num_threads=1, batch_size=1).predict(image)
    np.testing.assert_allclose(static.raw_score, dynamic.raw_score, rtol=1e-4)
    np.testing.assert_allclose(static.anomaly_map, dynamic.anomaly_map, rtol=1e-4, atol=1e-5)


def test_weight_heavy_graph_caches_no_blob(
    tmp_path: Path, padim_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above ``CACHE_BLOB_MAX_MB`` of weights the cache keeps only the prepared graph (an
    OpenVINO blob would be a second copy of the weights) and restarts compile it: same scores."""
    from inspection import runtime

    monkeypatch.setattr(runtime, "CACHE_BLOB_MAX_MB", 0.0)  # the quick bundle counts as heavy
    cache = tmp_path / "ov-cache"
    frame = SyntheticLine("disc", size=64, seed=3).defects(1)[0].image[None]
    cold = runtime.OpenVinoModel(padim_bundle, batch_size=1, cache_dir=cache)
    assert sorted(p.suffix for p in cache.iterdir()) == [".bin", ".json", ".xml"]
    warm = runtime.OpenVinoModel(padim_bundle, batch_size=1, cache_dir=cache)
    assert sorted(p.suffix for p in cache.iterdir()) == [".bin", ".json", ".xml"]
    a, b = cold.predict(frame), warm.predict(frame)
    np.testing.assert_allclose(a.raw_score, b.raw_score, rtol=1e-5)


def test_static_batch_pads_calls_with_fewer_frames(
    tmp_path: Path, padim_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compiled for exactly 4 frames per call (a weight-heavy station): 1-3 frames are padded
    and get their own results, the same as the dynamic graph's; more than 4 is refused. The
    large weights are then repacked rather than read in place (``constants_first`` only with
    a dynamic batch), and the mapped weights file's pages are handed back."""
    from inspection import runtime
    from inspection.mapped_files import can_page_out, mapped_mib

    monkeypatch.setattr(runtime, "CONSTANTS_FIRST_MIN_MB", 0.0)  # reach the quick bundle's
    # A private copy: pages of a file this process maps twice (a model another test left alive)
    # are shared between the two mappings, and the kernel does not page out shared pages.
    own = shutil.copytree(padim_bundle, tmp_path / "bundle")
    images = np.stack([s.image for s in SyntheticLine("disc", size=64, seed=9).defects(5)])
    static = runtime.OpenVinoModel(own, num_threads=1, batch_size=4)
    if can_page_out():
        weights_mib = (own / "model.bin").stat().st_size / 2**20
        assert mapped_mib([own]) < 0.05 * weights_mib  # the weights file's pages handed back
    dynamic = runtime.OpenVinoModel(own, num_threads=1)
    assert (dynamic.constants_first, static.constants_first) == (1, 0)
    for n in (1, 3, 4):
        have, want = static.predict(images[:n]), dynamic.predict(images[:n])
        assert have.anomaly_map.shape == (n, 64, 64)
        np.testing.assert_allclose(have.raw_score, want.raw_score, rtol=1e-4)
        np.testing.assert_allclose(have.anomaly_map, want.anomaly_map, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(have.is_anomalous, want.is_anomalous)
    pending = static.sibling().submit(images[1:3].copy())  # the padded copy outlives the call
    want = dynamic.predict(images[1:3]).raw_score
    np.testing.assert_allclose(pending.wait().raw_score, want, rtol=1e-4)
    with pytest.raises(ValueError, match="compiled for 4"):
        static.predict(images)
    with pytest.raises(ValueError, match="batch_size"):
        runtime.OpenVinoModel(own, batch_size=0)


def test_compile_cache_is_filled_and_reused(tmp_path: Path, padim_bundle: Path) -> None:
    """A compile cache folder gets OpenVINO's blob; a model loaded from it scores the same."""
    from inspection.runtime import OpenVinoModel

    cache = tmp_path / "ov-cache"
    frames = np.stack([s.image for s in SyntheticLine("disc", size=64, seed=3).normals(2)])
    cold = OpenVinoModel(padim_bundle, batch_size=1, cache_dir=cache)
    blobs = sorted(p.name for p in cache.iterdir() if p.is_file())
    assert blobs, "OpenVINO wrote nothing to the compile cache"
    assert len([p for p in cache.iterdir() if p.suffix == ".blob"]) == 1
    prepared = [p.suffix for p in cache.iterdir() if p.name.startswith("station-")]
    assert sorted(prepared) == [".bin", ".json", ".xml"]  # the station's graph, keyed by file
    warm = OpenVinoModel(padim_bundle, batch_size=1, cache_dir=cache)
    assert sorted(p.name for p in cache.iterdir() if p.is_file()) == blobs  # reused, not added
    assert warm.constants_first == cold.constants_first
    for frame in frames:
        a, b = cold.predict(frame[None]), warm.predict(frame[None])
        np.testing.assert_allclose(a.raw_score, b.raw_score, rtol=1e-5)
        np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=1e-4, atol=1e-6)


def test_changed_bundle_weights_are_prepared_again(tmp_path: Path, padim_bundle: Path) -> None:
    """The prepared graph is keyed on the weights file's identity: a bundle whose model.bin
    changed (retrained in place) is never scored with the old weights."""
    import os
    import xml.etree.ElementTree as ET

    from inspection.runtime import OpenVinoModel

    bundle = tmp_path / "bundle"
    shutil.copytree(padim_bundle, bundle)
    cache = tmp_path / "ov-cache"
    frame = SyntheticLine("disc", size=64, seed=3).defects(1)[0].image[None]
    before = OpenVinoModel(bundle, batch_size=1, cache_dir=cache).predict(frame)
    weights = bundle / "model.bin"
    consts = ET.parse(bundle / "model.xml").iter("data")
    largest = max(
        (
            d.attrib
            for d in consts
            if d.attrib.get("element_type") == "f32" and "offset" in d.attrib
        ),
        key=lambda a: int(a["size"]),
    )
    data = np.fromfile(weights, dtype=np.uint8)
    start, stop = int(largest["offset"]), int(largest["offset"]) + int(largest["size"])
    data[start:stop] = (data[start:stop].view(np.float32) * 2.0).view(np.uint8)  # same size
    data.tofile(weights)
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    after = OpenVinoModel(bundle, batch_size=1, cache_dir=cache).predict(frame)
    fresh = OpenVinoModel(bundle, batch_size=1).predict(frame)
    assert len(list(cache.glob("station-*.xml"))) == 2
    np.testing.assert_array_equal(after.raw_score, fresh.raw_score)
    assert not np.array_equal(after.anomaly_map, before.anomaly_map)


def test_compile_cache_folder_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inspection.runtime import usable_cache_dir
    from inspection.station.config import OV_CACHE_ENV, compile_cache_dir

    monkeypatch.delenv(OV_CACHE_ENV, raising=False)
    cfg = make_config(tmp_path)
    assert compile_cache_dir(cfg) == cfg.artifacts_dir / ".ov-cache"
    monkeypatch.setenv(OV_CACHE_ENV, str(tmp_path / "env-cache"))
    assert compile_cache_dir(cfg) == tmp_path / "env-cache"
    own = make_config(tmp_path, detector={"cache_dir": str(tmp_path / "own")})
    assert compile_cache_dir(own) == tmp_path / "own"
    assert compile_cache_dir(make_config(tmp_path, detector={"compile_cache": False})) is None
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert usable_cache_dir(blocker / "cache") is None  # cannot be created: no cache, no error


def test_compile_cache_is_pruned_oldest_first(tmp_path: Path) -> None:
    import os

    from inspection.runtime import prune_cache

    for i in range(4):
        blob = tmp_path / f"{i}.blob"
        blob.write_bytes(b"x" * 2**20)
        os.utime(blob, (1000 + i, 1000 + i))
    (tmp_path / "keep.txt").write_text("not a blob")
    removed = prune_cache(tmp_path, max_mb=2)
    assert [p.name for p in removed] == ["0.blob", "1.blob"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2.blob", "3.blob", "keep.txt"]


def test_compile_cache_prunes_prepared_graphs_whole(tmp_path: Path) -> None:
    """A prepared graph's three files go together, oldest first; the one in use stays."""
    import os

    from inspection.runtime import prune_cache

    for i, name in enumerate(["station-a", "station-b", "station-c"]):
        for suffix, size in ((".xml", 1), (".bin", 2**20), (".json", 1)):
            path = tmp_path / f"{name}{suffix}"
            path.write_bytes(b"x" * size)
            os.utime(path, (1000 + i, 1000 + i))
    (tmp_path / "new.blob").write_bytes(b"x" * 2**20)
    removed = prune_cache(tmp_path, max_mb=3.5, keep=tmp_path / "station-a.xml")
    assert sorted(p.name for p in removed) == ["station-b.bin", "station-b.json", "station-b.xml"]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["new.blob", *(f"station-{n}.{s}" for n in "ac" for s in ("bin", "json", "xml"))]


def test_station_reads_large_constant_weights_in_place(
    padim_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The station's loader swaps PaDiM's batched MatMul so its weights are not repacked
    (:func:`inspection.runtime.put_constants_first`, the memory default); scores stay within
    float32 rounding of the graph as exported, at every batch size a station scores."""
    from inspection import runtime
    from inspection.station.config import DetectorSettings
    from inspection.station.scoring_model import load_openvino

    images = np.stack([s.image for s in SyntheticLine("disc", size=64, seed=9).normals(4)])
    # the quick bundle's inverse covariances are small: lower the size limit to reach them
    monkeypatch.setattr(runtime, "CONSTANTS_FIRST_MIN_MB", 0.0)
    settings = DetectorSettings(
        source="bundle",
        path=padim_bundle,
        num_threads=1,
        performance_hint="latency",
        inference_precision="f32",
    )
    station_model = load_openvino(padim_bundle, settings)
    assert station_model.constants_first == 1  # type: ignore[attr-defined]
    exported = runtime.OpenVinoModel(padim_bundle, num_threads=1, constants_first=False)
    assert exported.constants_first == 0
    for batch in (images[:1], images[1:4]):
        have, want = station_model.predict(batch), exported.predict(batch)
        np.testing.assert_allclose(have.raw_score, want.raw_score, rtol=1e-5)
        np.testing.assert_allclose(have.anomaly_map, want.anomaly_map, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(have.is_anomalous, want.is_anomalous)
    monkeypatch.undo()  # at the real limit a 64 px PaDiM's few kB of weights stay as they are
    assert runtime.OpenVinoModel(padim_bundle, num_threads=1).constants_first == 0


@pytest.mark.parametrize(("ta", "tb"), [(False, False), (True, False), (False, True), (True, True)])
def test_put_constants_first_keeps_the_product(ta: bool, tb: bool) -> None:
    """``(W^T x^T)^T`` equals ``x @ W`` for each of the MatMul's transpose flags."""
    import openvino as ov
    import openvino.opset13 as ops

    from inspection.runtime import put_constants_first

    rng = np.random.default_rng(0)
    weights = rng.standard_normal((16, 6, 5) if tb else (16, 5, 6)).astype(np.float32)
    x = rng.standard_normal((16, 5, 3) if ta else (16, 3, 5)).astype(np.float32)

    def build() -> ov.Model:
        param = ops.parameter([16, -1, 5] if not ta else [16, 5, -1], ov.Type.f32)
        out = ops.matmul(param, ops.constant(weights), ta, tb)
        return ov.Model([out], [param])

    core, f32 = ov.Core(), {"INFERENCE_PRECISION_HINT": "f32"}  # not the CPU's bf16 default
    model = build()
    assert put_constants_first(model, min_mb=1.0) == 0  # 2 kB of weights: left as they are
    assert put_constants_first(model, min_mb=0.0) == 1
    got = core.compile_model(model, "CPU", f32)({0: x})[0]
    want = core.compile_model(build(), "CPU", f32)({0: x})[0]
    assert got.shape == want.shape == (16, 3, 6)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_start_bench_measures_exported_bundles_as_they_are(
    tmp_path: Path, padim_bundle: Path
) -> None:
    """``bench start --bundles-dir``: the bundles found there, nothing trained or exported."""
    from inspection.bench import start_bench

    bundles = tmp_path / "bundles"
    bundles.mkdir()
    (bundles / "padim").symlink_to(padim_bundle)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in padim_bundle.iterdir())
    payload = start_bench.run(
        ["padim"],
        repeats=1,
        rss_run_s=0.2,
        workdir=tmp_path / "work",
        results_dir=tmp_path / "results",
        name="start",
        bundles_dir=bundles,
    )
    row = payload["detectors"]["padim"]
    assert row["size"] == 64 and row["rss_mib"] > 0 and row["cold_start_s"] > 0
    assert payload["bundles_dir"] == str(bundles)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in padim_bundle.iterdir()) == before
    assert not (tmp_path / "work" / "padim").exists()  # no bench-trained bundle
    assert "as exported in" in (tmp_path / "results" / "start.md").read_text()
