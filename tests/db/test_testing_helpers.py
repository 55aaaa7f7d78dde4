"""The throwaway-PostgreSQL helper: URL shape, and a clear skip reason without binaries."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from inspection.db import testing
from inspection.db.engine import make_engine
from inspection.errors import PostgresUnavailableError


@pytest.mark.postgres
def test_postgres_fixture_gives_a_psycopg_url(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql+psycopg://postgres:")
    assert "@127.0.0.1:" in postgres_url
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar() == "inspection"
    finally:
        engine.dispose()


def test_missing_binaries_give_a_clear_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testing, "PG_BIN_GLOB", "/nonexistent/postgresql/*/bin")
    monkeypatch.setattr(testing.shutil, "which", lambda _name: None)
    reason = testing.postgres_unavailable_reason()
    assert reason is not None
    assert "postgresql" in reason
    assert "make system-deps" in reason
    with pytest.raises(PostgresUnavailableError), testing.start_temporary_postgres("/tmp/x"):
        pass
