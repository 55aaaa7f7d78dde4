"""A miniature ``inspection bench load`` fault run: PostgreSQL stopped and restarted, two
stations killed with SIGKILL (mid spool write, mid replay) and restarted; every produced result
is stored exactly once. The committed 10-minute numbers are in bench/results/load.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inspection.bench import load_bench
from inspection.db.testing import postgres_unavailable_reason

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_fault_run_stores_every_result_once(tmp_path: Path) -> None:
    reason = postgres_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    config = load_bench.LoadConfig(
        stations=2, fps=10.0, duration_s=16.0, outage_s=4.0, normal=False, faults=True
    )
    payload = load_bench.run(
        config, results_dir=tmp_path / "results", workdir=tmp_path / "work", progress=lambda _: None
    )
    (run,) = payload["runs"]
    assert run["produced"] == 2 * 160
    assert run["stored"] == run["produced"] and run["duplicates"] == 0 and run["missing"] == 0
    assert run["spool_left"] == 0 and run["persist_failures"] == 0
    events = [e["event"] for e in run["events"]]
    assert events.count("restarted") == 2 and "postgresql started" in events
    saved = json.loads((tmp_path / "results" / "load.json").read_text())
    assert {"commit", "date", "machine", "runs"} <= set(saved)
    assert {"name", "produced", "stored", "duplicates", "p99_write_ms"} <= set(saved["runs"][0])
