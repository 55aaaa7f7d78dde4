"""``inspection db`` commands on a temporary SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from inspection.db.cli import app
from inspection.db.schema_doc import render_schema_markdown

runner = CliRunner()


def test_upgrade_current_downgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db' / 'x.db'}"
    result = runner.invoke(app, ["current", "--url", url])
    assert result.exit_code == 1
    assert "inspection db upgrade" in result.output

    result = runner.invoke(app, ["upgrade", "--url", url])
    assert result.exit_code == 0, result.output
    assert "<empty> ->" in result.output

    result = runner.invoke(app, ["current", "--url", url])
    assert result.exit_code == 0
    assert "at head" in result.output

    result = runner.invoke(app, ["downgrade", "base", "--url", url, "--yes"])
    assert result.exit_code == 0, result.output
    assert "<empty>" in result.output


def test_default_url_is_var_inspection_db_in_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INSPECTION_DATABASE_URL", raising=False)
    result = runner.invoke(app, ["upgrade"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "var" / "inspection.db").exists()


def test_connection_errors_are_short_and_masked() -> None:
    url = "postgresql://inspector:hunter2@127.0.0.1:1/nowhere"
    result = runner.invoke(app, ["current", "--url", url])
    assert result.exit_code == 1
    assert "hunter2" not in result.output
    assert "cannot use the database" in result.output


def test_schema_doc_command(tmp_path: Path) -> None:
    out = tmp_path / "schema.md"
    result = runner.invoke(app, ["schema-doc", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == render_schema_markdown()
