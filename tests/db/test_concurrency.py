"""Two station processes and an API process write one SQLite file: nothing lost, never locked.

The acceptance run lasts 60 s; set ``INSPECTION_DB_STRESS_SECONDS`` for a shorter local run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inspection.db.stress import run_concurrent_writers

DURATION_S = float(os.environ.get("INSPECTION_DB_STRESS_SECONDS", "60"))


@pytest.mark.slow
def test_two_stations_and_api_share_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    result = run_concurrent_writers(url, duration_s=DURATION_S, n_stations=2)

    assert result.errors == []  # no "database is locked" (or anything else) reached a caller
    stations = [r for r in result.reports if r.name.startswith("station:")]
    api = next(r for r in result.reports if r.name == "api")
    assert all(r.committed_keys for r in stations)
    assert api.labels > 0
    assert result.missing_keys == []  # every committed inspection is stored ...
    assert result.unexpected_keys == []  # ... and nothing else
    assert result.inspections_in_db == result.committed  # replays added no rows
    assert sum(r.replays for r in stations) > 0
    assert result.labels_in_db == api.labels
