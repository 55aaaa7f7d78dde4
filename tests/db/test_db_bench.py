"""``inspection bench db`` runs end to end on a tiny size (numbers are not checked here)."""

from __future__ import annotations

import json
from pathlib import Path

from inspection.bench.db_bench import COLUMNS, BenchConfig, run
from inspection.db.testing import postgres_unavailable_reason


def test_db_bench_smoke(tmp_path: Path) -> None:
    config = BenchConfig(n_inspections=60, batch_size=25, n_single_commit=5, n_queries=3)
    payload = run(config, results_dir=tmp_path)
    data = json.loads((tmp_path / "db.json").read_text())
    assert data["commit"]
    assert data["config"]["n_inspections"] == 60
    expected = {"sqlite"} | ({"postgresql"} if postgres_unavailable_reason() is None else set())
    assert set(payload["engines"]) == expected
    for result in payload["engines"].values():
        assert result["rows"]["inspection"] == 65
        assert result["rows"]["operator_label"] == 6
        for column in COLUMNS:
            assert column in result
    assert "review_p95_ms" in (tmp_path / "db.md").read_text()
