"""Database fixtures: a throwaway PostgreSQL server per test session, fresh migrated databases.

``postgres_url`` (session) starts a private cluster with Debian's binaries and skips, with the
reason, when they are not installed. ``db_url`` is parametrised over SQLite and PostgreSQL and
gives each test an empty database; ``engine`` runs the Alembic migrations on it (never
``create_all``), ``session`` opens a session on that engine.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from inspection.db import migrate
from inspection.db.engine import make_engine, make_session_factory
from inspection.db.testing import (
    create_database,
    drop_database,
    postgres_unavailable_reason,
    start_temporary_postgres,
)


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL (``postgresql+psycopg://...``) of a database on a temporary PostgreSQL server."""
    reason = postgres_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with start_temporary_postgres(tmp_path_factory.mktemp("postgres")) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database, on each engine in turn."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'inspection.db'}"
        return
    server_url: str = request.getfixturevalue("postgres_url")
    name = f"t_{uuid.uuid4().hex[:16]}"
    url = create_database(server_url, name)
    yield url
    drop_database(server_url, name)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on a database migrated to head."""
    eng = make_engine(db_url)
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session on the migrated database (tests commit or flush as they need)."""
    factory = make_session_factory(engine)
    with factory() as sess:
        yield sess
