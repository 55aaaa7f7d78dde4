"""Station bootstrap with ``detector: auto`` (the default): the chosen candidate is exported."""

from __future__ import annotations

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
