"""Alembic environment for inspection.

Run through ``inspection db upgrade`` (which hands over an engine in ``config.attributes``) or
the plain ``alembic`` command with the repository's ``alembic.ini`` (the URL then comes from
``-x url=...``, ``sqlalchemy.url`` or ``INSPECTION_DATABASE_URL``). Either way the engine is
built by :func:`inspection.db.engine.make_engine`, so SQLite gets WAL and ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, Engine

from inspection.db.engine import make_engine
from inspection.db.models import Base
from inspection.db.settings import get_settings

config = context.config
target_metadata = Base.metadata

# Only the alembic CLI (with an ini file) configures logging; the app keeps its own.
if config.config_file_name is not None and config.attributes.get("engine") is None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    return (
        context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or get_settings().database_url
    )


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        # make_engine's SQLite connections run real BEGIN ... COMMIT, so DDL is transactional
        # there too: a failed upgrade leaves the previous schema intact.
        transactional_ddl=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade head --sql``) without connecting."""
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=_url().startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate over a connection of the engine handed in, or of one built from the URL."""
    engine: Engine | None = config.attributes.get("engine")
    owned = engine is None
    if engine is None:
        engine = make_engine(_url())
    try:
        with engine.connect() as connection:
            _configure(connection)
    finally:
        if owned:
            engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
