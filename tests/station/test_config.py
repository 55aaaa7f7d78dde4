"""Station configs: the example line, defaults merging, clear errors for unknown keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from inspection.errors import ConfigError
from inspection.station.config import (
    SyntheticSourceConfig,
    deep_merge,
    load_line,
    load_station_config,
    parse_station_config,
)
from tests.conftest import REPO_ROOT

EXAMPLE_LINE = REPO_ROOT / "stations" / "example-line"


def test_example_line_loads_with_defaults() -> None:
    configs = load_line(EXAMPLE_LINE)
    assert [c.id for c in configs] == ["example-a", "example-b"]
    a, b = configs
    assert isinstance(a.camera, SyntheticSourceConfig) and isinstance(
        b.camera, SyntheticSourceConfig
    )
    assert (a.camera.family, b.camera.family) == ("disc", "tile")
    assert a.retrain.schedule == "0 2 * * *"  # from stations/defaults.yaml
    assert a.retention.days == 90 and a.retention.frames == "anomalous"
    assert a.detector.source == "database" and b.detector.source == "bundle"
    assert b.roi is not None and b.resize == 128
    # fast by default: chosen from the cores and the bundle; the example line's two stations
    # share a machine and take one OpenVINO thread each (stations/example-line/defaults.yaml)
    assert a.detector.inference_precision == a.detector.performance_hint == "auto"
    assert a.pipeline.batch_size == a.pipeline.infer_workers == "auto"
    assert a.detector.num_threads == b.detector.num_threads == 1


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


STATION = """
id: s1
line: l1
camera: {type: synthetic, family: tile}
detector: {source: bundle, path: var/models/s1}
"""


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    root = tmp_path / "stations"
    bad = _write(root / "line" / "s1.yaml", STATION + "camera_typo: 3\n")
    with pytest.raises(ConfigError, match=r"s1\.yaml: unknown key 'camera_typo'"):
        load_station_config(bad)
    nested = _write(
        root / "line" / "s2.yaml", STATION.replace("family: tile", "family: tile, fsp: 3")
    )
    with pytest.raises(ConfigError, match=r"s2\.yaml: unknown key 'camera\.fsp'"):
        load_station_config(nested)


def test_defaults_are_merged_and_blamed(tmp_path: Path) -> None:
    root = tmp_path / "stations"
    _write(root / "defaults.yaml", "retention: {days: 7, frames: all}\npipeline: {queue_size: 3}\n")
    _write(root / "line" / "defaults.yaml", "pipeline: {batch_size: 2}\n")
    station = _write(root / "line" / "s1.yaml", STATION + "retention: {days: 30}\n")
    cfg = load_station_config(station)
    assert cfg.retention.days == 30 and cfg.retention.frames == "all"
    assert cfg.pipeline.queue_size == 3 and cfg.pipeline.batch_size == 2
    _write(root / "defaults.yaml", "retention: {dayz: 7}\n")
    with pytest.raises(
        ConfigError, match=r"stations/defaults\.yaml: unknown key 'retention\.dayz'"
    ):
        load_station_config(station)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"retrain": {"schedule": "every night"}}, "not a valid cron"),
        (
            {"camera": {"type": "stream", "url": "rtsp://admin:secret@cam/s"}},
            "credentials must not",
        ),
        (
            {"camera": {"type": "stream", "url": "rtsp://{user}:{password}@cam/s"}},
            "no credentials_env",
        ),
        ({"camera": {"type": "usb", "index": 0}}, "bootstrap trains on the synthetic line"),
        ({"detector": {"source": "bundle", "path": None}}, "needs detector.path"),
        ({"image_threshold": 1.5}, "image_threshold"),
        ({"id": "bad id!"}, "station id"),
    ],
)
def test_invalid_values(patch: dict, message: str) -> None:
    base = {
        "id": "s1",
        "line": "l1",
        "camera": {"type": "synthetic"},
        "detector": {"source": "bundle", "path": "x", "bootstrap": {"detector": "padim"}},
    }
    if "camera" in patch:
        base["camera"] = {}
    with pytest.raises(ConfigError, match=message):
        parse_station_config(deep_merge(base, patch))


def test_duplicate_station_ids_rejected(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", STATION)
    _write(tmp_path / "b.yaml", STATION)
    with pytest.raises(ConfigError, match="used more than once"):
        load_line(tmp_path)


def test_check_command(tmp_path: Path) -> None:
    from inspection.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["station", "check", str(EXAMPLE_LINE)])
    assert ok.exit_code == 0, ok.output
    assert "example-a" in ok.output and "example-b" in ok.output
    bad = _write(tmp_path / "bad.yaml", STATION + "colour: red\n")
    result = runner.invoke(app, ["station", "check", str(bad)])
    assert result.exit_code == 1 and "unknown key 'colour'" in result.output
