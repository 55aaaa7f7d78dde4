"""Database settings from the environment (``INSPECTION_DATABASE_URL``, ...).

Secrets such as the database password only ever come from the environment; log URLs through
:func:`mask_url` so the password never reaches a log file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DATABASE_URL = "sqlite:///var/inspection.db"
ENV_PREFIX = "INSPECTION_"


class DatabaseSettings(BaseModel):
    """Where the database lives and where the Alembic migrations are.

    ``database_url``: any SQLAlchemy URL; ``sqlite:///relative/path.db`` is relative to the
    current directory (its parent folder is created on first use), plants use
    ``postgresql+psycopg://user:password@host/dbname``.
    ``migrations_dir``: override for the Alembic script folder (the default is the copy inside
    the installed package, or ``<repo>/migrations`` beside a source tree).

    Read from ``INSPECTION_<FIELD>`` (any case, as pydantic-settings would) by
    :meth:`from_environment`; a plain pydantic model, so a station process does not import
    pydantic-settings for two variables (station start time).
    """

    model_config = ConfigDict(extra="forbid")

    database_url: str = DEFAULT_DATABASE_URL
    migrations_dir: Path | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> DatabaseSettings:
        """The settings from ``environ`` (default ``os.environ``); unset fields default."""
        env = {k.lower(): v for k, v in (os.environ if environ is None else environ).items()}
        prefix = ENV_PREFIX.lower()
        return cls(**{f: env[prefix + f] for f in cls.model_fields if prefix + f in env})


def get_settings() -> DatabaseSettings:
    """Read the settings from the environment now (not cached: tests change the environment)."""
    return DatabaseSettings.from_environment()


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, safe to log or print."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"
