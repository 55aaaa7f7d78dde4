"""``inspection retrain ...`` / ``inspection scheduler run --once`` wiring (no training)."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from inspection.cli import app
from inspection.db import repo
from inspection.db.engine import run_in_transaction

from .conftest import LoopDb


def _url(db: LoopDb) -> str:
    return db.engine.url.render_as_string(hide_password=False)


def test_retrain_without_active_model_fails_clearly(loop_db: LoopDb, tmp_path: Path) -> None:
    out = CliRunner().invoke(
        app, ["retrain", "--station", "s1", "--stations", str(tmp_path), "--db-url", _url(loop_db)]
    )
    assert out.exit_code == 1
    assert "has no active model" in out.output


def test_jobs_cancel_and_rollback_commands(loop_db: LoopDb) -> None:
    job_id = run_in_transaction(
        loop_db.factory, lambda s: repo.create_retrain_job(s, station_id=loop_db.station_id).id
    )
    runner = CliRunner()
    out = runner.invoke(app, ["retrain", "jobs", "--station", "s1", "--db-url", _url(loop_db)])
    assert out.exit_code == 0, out.output
    assert "queued" in out.output
    out = runner.invoke(app, ["retrain", "cancel", "--station", "s1", "--db-url", _url(loop_db)])
    assert out.exit_code == 0, out.output
    assert f"[{job_id}]" in out.output
    out = runner.invoke(app, ["retrain", "rollback", "--station", "s1", "--db-url", _url(loop_db)])
    assert out.exit_code == 1
    assert "no earlier active model" in out.output


def test_scheduler_once_with_nothing_due(loop_db: LoopDb, tmp_path: Path) -> None:
    stations = tmp_path / "stations"
    stations.mkdir()
    (stations / "s1.yaml").write_text(
        yaml.safe_dump(
            {
                "id": "s1",
                "line": "l1",
                "camera": {"type": "synthetic", "size": 32},
                "detector": {"source": "database"},
                "retrain": {"schedule": "0 2 * * *"},
            }
        )
    )
    out = CliRunner().invoke(
        app,
        ["scheduler", "run", "--once", "--stations", str(stations), "--db-url", _url(loop_db)],
    )
    assert out.exit_code == 0, out.output
    assert "1 station(s) on a schedule: s1" in out.output
