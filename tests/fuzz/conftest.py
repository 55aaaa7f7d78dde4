"""Fuzz fixtures: one migrated SQLite database per module (hypothesis runs many examples)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from inspection.db import migrate
from inspection.db.engine import make_engine, make_session_factory


@pytest.fixture(scope="module")
def db_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], sessionmaker[Session]]]:
    """A callable returning the session factory of a migrated SQLite database."""
    path = tmp_path_factory.mktemp("fuzz-db") / "fuzz.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    factory = make_session_factory(engine)
    yield lambda: factory
    engine.dispose()


# The review app on a seeded database, shared with the API tests (reused, not duplicated).
from tests.api.conftest import app, auth, session, settings, template  # noqa: E402

__all__ = ["app", "auth", "db_factory", "session", "settings", "template"]
