"""A quiet, graceful CLI (issue #20): third-party noise filtered, ``inspection demo`` stopped by
SIGTERM the way Ctrl+C stops it (capture ends, everything captured is stored, exit code 0)."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

from inspection.bench.start_bench import stored_results
from inspection.quiet import quiet_third_party
from tests.conftest import synthetic_set


def test_known_third_party_warnings_are_filtered_and_others_are_not() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party()
        warnings.warn(
            "Importing from timm.models.layers is deprecated, please import via timm.layers",
            FutureWarning,
            stacklevel=1,
        )
        warnings.warn("`torch.jit.trace` is deprecated. Please switch", FutureWarning, stacklevel=1)
        warnings.warn("something else is deprecated", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else is deprecated"]


def test_timm_head_keys_are_dropped_other_unexpected_keys_shown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    quiet_third_party()
    log = logging.getLogger("timm.models._builder")
    tail = (
        " found while loading pretrained weights. This may be expected if model is being adapted."
    )
    with caplog.at_level(logging.WARNING, logger="timm.models._builder"):
        log.warning("Unexpected keys (conv_head.weight, bn2.bias, classifier.weight)" + tail)
        log.warning("Unexpected keys (blocks.0.0.conv_dw.weight, classifier.bias)" + tail)
    assert [r.getMessage()[:40] for r in caplog.records] == [
        "Unexpected keys (blocks.0.0.conv_dw.weig"
    ]


@pytest.fixture(scope="module")
def padim_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inspection import training
    from inspection.detectors import registry

    cls = registry.get("padim")
    trained = training.train(cls(cls.quick_config()), synthetic_set(64, 32, 0, seed=5))
    return training.export_openvino(trained, tmp_path_factory.mktemp("padim") / "bundle")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_demo_stops_gracefully_on_sigterm(tmp_path: Path, padim_bundle: Path) -> None:
    line = tmp_path / "line"
    line.mkdir()
    (line / "s1.yaml").write_text(
        textwrap.dedent(
            f"""
            id: s1
            line: l1
            camera: {{type: synthetic, size: 64, seed: 2, defect_rate: 0.3, fps: 20}}
            detector: {{source: bundle, path: "{padim_bundle}"}}
            artifacts_dir: "{tmp_path / "artifacts"}"
            pipeline: {{stats_interval_s: 0}}
            """
        )
    )
    db = tmp_path / "demo.sqlite"
    env = {**os.environ, "INSPECTION_DATABASE_URL": f"sqlite:///{db}", "COLUMNS": "400"}
    cmd = [sys.executable, "-c", "from inspection.cli import main; main()", "demo"]
    proc = subprocess.Popen(
        [*cmd, "--line", str(line), "--port", str(_free_port())],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while stored_results(db) < 5:
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "no results stored within 180 s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out[-3000:]
    assert "SIGTERM: stopping" in out
    tail = out.split("s1: ", 1)[1]
    counters = {
        k: int(re.search(rf"'{k}':\s*(\d+)", tail).group(1))  # type: ignore[union-attr]
        for k in ("captured", "persisted", "dropped")
    }
    assert counters["captured"] == counters["persisted"] + counters["dropped"], counters
    assert stored_results(db) == counters["persisted"] > 0
