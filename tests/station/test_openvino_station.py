"""The station on a real OpenVINO bundle (PaDiM, 64 px), and the torch-free hot path.

The bundle is trained once per test module (quick config on synthetic parts, a few seconds).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import select

from inspection.db.models import Artifact, Inspection
from inspection.runtime import read_metadata
from tests.conftest import REPO_ROOT, synthetic_set
from tests.station.conftest import assert_accounted, count_rows, make_config
from tests.station.conftest import make_station as _make_station


@pytest.fixture(scope="module")
def padim_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inspection import engine
    from inspection.detectors import registry

    cls = registry.get("padim")
    trained = engine.train(cls(cls.quick_config()), synthetic_set(64, 32, 0, seed=5))
    return engine.export_openvino(trained, tmp_path_factory.mktemp("padim") / "bundle")


@pytest.mark.parametrize(
    ("hint", "workers", "batch"), [("latency", 1, 4), ("throughput", 2, 1)], ids=["latency", "tput"]
)
def test_station_runs_openvino_bundle(
    tmp_path: Path, db, padim_bundle: Path, hint: str, workers: int, batch: int
) -> None:
    """Every frame scored and stored, with one inference at a time or parallel streams."""
    from inspection.station.pipeline import load_openvino

    _, factory = db
    cfg = make_config(
        tmp_path,
        camera={"size": 64, "count": 24, "defect_rate": 0.5, "seed": 7},
        detector={"path": str(padim_bundle), "num_threads": 1, "performance_hint": hint},
        pipeline={"batch_size": batch, "infer_workers": workers},
    )
    station = _make_station(cfg, factory, model_loader=load_openvino)
    stats = station.run()
    if workers > 1:  # the workers shared one compiled model, each with its own request
        models = station.active.models
        assert models[0].compiled is models[1].compiled  # type: ignore[attr-defined]
        assert models[0].request is not models[1].request  # type: ignore[attr-defined]
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
    import shutil

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
    )
    assert payload["errors"] == {}
    assert [r["variant"] for r in payload["runs"]] == ["b1 tauto w1", "b2 t1 w2"]
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
    assert (tmp_path / "results" / "station.md").read_text().startswith("# station")
