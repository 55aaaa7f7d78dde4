"""Database settings from the environment (``INSPECTION_DATABASE_URL``, ...).

Secrets such as the database password only ever come from the environment; log URLs through
:func:`mask_url` so the password never reaches a log file.
"""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DATABASE_URL = "sqlite:///var/inspection.db"


class DatabaseSettings(BaseSettings):
    """Where the database lives and where the Alembic migrations are.

    ``database_url``: any SQLAlchemy URL; ``sqlite:///relative/path.db`` is relative to the
    current directory (its parent folder is created on first use), plants use
    ``postgresql+psycopg://user:password@host/dbname``.
    ``migrations_dir``: override for the Alembic script folder (the default is the copy inside
    the installed package, or ``<repo>/migrations`` beside a source tree).
    """

    model_config = SettingsConfigDict(env_prefix="INSPECTION_", extra="forbid")

    database_url: str = DEFAULT_DATABASE_URL
    migrations_dir: Path | None = None


def get_settings() -> DatabaseSettings:
    """Read the settings from the environment now (not cached: tests change the environment)."""
    return DatabaseSettings()


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, safe to log or print."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"
