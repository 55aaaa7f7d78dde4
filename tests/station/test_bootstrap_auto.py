"""Station bootstrap with ``detector: auto`` (the default): the chosen candidate is exported."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from inspection.runtime import read_metadata
from inspection.station.bootstrap import train_bundle
from inspection.station.config import BootstrapConfig, StationConfig


def test_bootstrap_defaults_to_auto_and_refuses_settings_for_it() -> None:
    assert BootstrapConfig().detector == "auto"
    with pytest.raises(ValueError, match="drop 'config'"):
        BootstrapConfig(config={"n_features": 10})


def test_bootstrap_auto_exports_the_chosen_candidate(tmp_path: Path) -> None:
    config = StationConfig.model_validate(
        {
            "id": "s-auto",
            "line": "l1",
            "camera": {"type": "synthetic", "family": "disc", "size": 96, "seed": 4},
            "resize": 64,
            "detector": {
                "source": "bundle",
                "path": str(tmp_path / "bundle"),
                "bootstrap": {"normals": 24},
            },
            "artifacts_dir": str(tmp_path / "artifacts"),
        }
    )
    bundle = train_bundle(config, tmp_path / "bundle")
    meta = read_metadata(bundle)
    sel = meta["auto_selection"]
    assert set(sel["candidates"]) == {"padim", "patchcore", "patchcore@96"}
    chosen = sel["candidates"][sel["chosen"]]
    assert meta["detector"] == chosen["detector"]
    assert meta["input"]["size"] == chosen["image_size"]


def test_bootstrap_pads_a_long_narrow_region_of_interest(tmp_path: Path) -> None:
    """A 96 x 32 region of interest is letterboxed, not squashed; the bundle says so."""
    from inspection.runtime import OpenVinoModel

    config = StationConfig.model_validate(
        {
            "id": "s-pad",
            "line": "l1",
            "camera": {"type": "synthetic", "family": "disc", "size": 96, "seed": 4},
            "roi": {"x": 0, "y": 32, "w": 96, "h": 32},
            "resize": 64,
            "detector": {
                "source": "bundle",
                "path": str(tmp_path / "bundle"),
                "bootstrap": {"detector": "padim", "normals": 24},
            },
            "artifacts_dir": str(tmp_path / "artifacts"),
        }
    )
    bundle = train_bundle(config, tmp_path / "bundle")
    assert read_metadata(bundle)["input"]["fit"] == "pad"
    assert OpenVinoModel(bundle).fit == "pad"


def test_progress_lines_one_per_stage_and_throttled(capsys: pytest.CaptureFixture[str]) -> None:
    from inspection.station.bootstrap import PROGRESS_PREFIX, _ProgressLines

    progress = _ProgressLines("s1", every_s=3600)
    for done in range(5):
        progress("fit", done, 5)
    progress("fit", 5, 5)
    progress("calibrate", 0, 1)
    lines = capsys.readouterr().err.splitlines()
    assert [line.startswith(PROGRESS_PREFIX) for line in lines] == [True] * 3
    assert [json.loads(line[len(PROGRESS_PREFIX) :])["done"] for line in lines] == [0, 5, 0]


@pytest.mark.slow
def test_bootstrap_subprocess_trains_stations_and_reports_progress(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """First models train in one subprocess; its progress shows up in this process's log, and
    each station is reported ready as soon as its own model is done (the next still to train)."""
    from inspection.station.bootstrap import run_bootstraps_subprocess

    configs = [
        StationConfig.model_validate(
            {
                "id": sid,
                "line": "l1",
                "camera": {"type": "synthetic", "family": "disc", "size": 64, "seed": 4},
                "detector": {
                    "source": "bundle",
                    "path": str(tmp_path / sid),
                    "bootstrap": {"detector": "padim", "normals": 16},
                },
                "artifacts_dir": str(tmp_path / "artifacts"),
            }
        )
        for sid in ("s-one", "s-two")
    ]
    ready: list[tuple[str, bool]] = []

    def on_ready(result: dict[str, object]) -> None:
        ready.append((str(result["station"]), (tmp_path / "s-two" / "model.json").is_file()))

    with caplog.at_level(logging.INFO, logger="inspection.station.bootstrap"):
        results = run_bootstraps_subprocess(
            configs, f"sqlite:///{tmp_path / 'unused.sqlite'}", on_ready=on_ready
        )
    assert [r["station"] for r in results] == ["s-one", "s-two"]
    assert ready == [("s-one", False), ("s-two", True)]  # s-one could score while s-two trained
    for result in results:
        assert read_metadata(Path(result["bundle"]))["detector"] == "padim"
    steps = [r.getMessage() for r in caplog.records if "first model:" in r.getMessage()]
    for sid in ("s-one", "s-two"):
        mine = [m for m in steps if m.startswith(f"station {sid}:")]
        assert mine and mine[-1].endswith("export to OpenVINO 0/1"), steps
