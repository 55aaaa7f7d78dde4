"""Migrations: round trip, no drift between models and revisions, schema-at-head check."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from inspection.db import migrate
from inspection.db.engine import check_schema_at_head, make_engine
from inspection.db.models import Base
from inspection.errors import DatabaseError, SchemaOutOfDateError
from tests.conftest import REPO_ROOT


def _diff(engine_url: str) -> list[object]:
    engine = make_engine(engine_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_round_trip_and_no_autogenerate_diff(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        head = migrate.head_revision()
        assert migrate.current_revision(engine) == head
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables

        migrate.downgrade(engine, "base")
        assert migrate.current_revision(engine) is None
        left = set(inspect(engine).get_table_names()) - {"alembic_version"}
        assert left == set()

        migrate.upgrade(engine)
        assert migrate.current_revision(engine) == head
    finally:
        engine.dispose()
    assert _diff(db_url) == []


def test_check_schema_at_head(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with pytest.raises(SchemaOutOfDateError, match="inspection db upgrade") as info:
            check_schema_at_head(engine)
        password = make_url(db_url).password
        if password:  # the PostgreSQL fixture uses one; it must never appear in messages
            assert str(password) not in str(info.value)
            assert "***" in str(info.value)
        migrate.upgrade(engine)
        assert check_schema_at_head(engine) == migrate.head_revision()

        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'ffffffffffff'"))
        with pytest.raises(SchemaOutOfDateError, match="upgrade the software"):
            check_schema_at_head(engine)
    finally:
        engine.dispose()


def test_missing_migrations_dir_is_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INSPECTION_MIGRATIONS_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DatabaseError, match="INSPECTION_MIGRATIONS_DIR"):
        migrate.head_revision()


def test_single_head() -> None:
    assert migrate.head_revision() in migrate.known_revisions()


@pytest.mark.parametrize("url", ["sqlite:///offline.db", "postgresql+psycopg://u@h/db"])
def test_offline_sql_generation(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``alembic upgrade head --sql`` works without a database (for DBAs who review DDL)."""
    from alembic import command

    cfg = migrate.alembic_config()
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "head", sql=True)
    sql = capsys.readouterr().out
    assert "CREATE TABLE inspection" in sql
    assert "fk_retrain_job_base_model_version_id_model_version" in sql


@pytest.mark.slow
def test_the_wheel_carries_the_migrations(tmp_path: Path) -> None:
    """``pip wheel`` of the repository ships ``migrations/`` as ``inspection/db/migrations``
    (every revision and the template), the folder an installed package migrates from."""
    import subprocess
    import sys
    import zipfile

    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    build = subprocess.run(
        [*pip, "-w", str(tmp_path), str(REPO_ROOT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if build.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {build.stderr[-500:]}")
    (wheel,) = tmp_path.glob("inspection-*.whl")
    shipped = {
        name.removeprefix("inspection/db/migrations/")
        for name in zipfile.ZipFile(wheel).namelist()
        if name.startswith("inspection/db/migrations/")
    }
    source = REPO_ROOT / "migrations"
    wanted = {"env.py", "script.py.mako"} | {
        f"versions/{p.name}" for p in (source / "versions").glob("*.py")
    }
    assert wanted <= shipped, wanted - shipped


def test_installed_copy_comes_before_the_source_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wheel install migrates from its own copy; the override still wins."""
    packaged = tmp_path / "site" / "migrations"
    packaged.mkdir(parents=True)
    (packaged / "env.py").touch()
    monkeypatch.delenv("INSPECTION_MIGRATIONS_DIR", raising=False)
    monkeypatch.setattr(migrate, "_packaged", lambda: packaged)
    assert migrate.migrations_dir() == packaged
    monkeypatch.setenv("INSPECTION_MIGRATIONS_DIR", str(REPO_ROOT / "migrations"))
    assert migrate.migrations_dir() == REPO_ROOT / "migrations"
