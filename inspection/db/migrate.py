"""Running the Alembic migrations programmatically (what ``inspection db ...`` calls).

The scripts live in the repository's top-level ``migrations/`` folder (Alembic's script
location, where new revisions are written). The wheel ships the same folder as
``inspection/db/migrations`` (``setup.py``), so an installed package needs neither a clone nor
``alembic.ini``; a clone or an editable install reads ``<repo>/migrations`` beside the package.
``INSPECTION_MIGRATIONS_DIR`` overrides both. The same engine configuration as the app is used
(SQLite ``BEGIN IMMEDIATE``, WAL, ...).
"""

from __future__ import annotations

import importlib.resources
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from inspection.db.settings import get_settings
from inspection.errors import DatabaseError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory


_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def _packaged() -> Path | None:
    """``inspection/db/migrations`` of an installed wheel (None in a source tree)."""
    folder = importlib.resources.files("inspection.db") / "migrations"
    return folder if isinstance(folder, Path) and (folder / "env.py").is_file() else None


def migrations_dir() -> Path:
    """The Alembic script folder: ``INSPECTION_MIGRATIONS_DIR``, else the one inside the
    installed package, else ``<repo>/migrations`` beside the source tree.

    Raises:
        DatabaseError: none of them exists.
    """
    override = get_settings().migrations_dir
    if override is None:
        packaged = _packaged()
        if packaged is not None:
            return packaged
    candidate = override if override is not None else _PACKAGE_ROOT / "migrations"
    if not (candidate / "env.py").is_file():
        source = "INSPECTION_MIGRATIONS_DIR" if override is not None else "the source tree"
        raise DatabaseError(
            f"Alembic migrations not found at {candidate} (from {source}) nor inside the "
            "installed package; reinstall inspection (the wheel ships them) or set "
            "INSPECTION_MIGRATIONS_DIR to the repository's migrations/ folder"
        )
    return candidate


def alembic_config(engine: Engine | None = None) -> Config:
    """An Alembic :class:`Config` for this package's scripts.

    With ``engine``, ``env.py`` runs on a connection from it (``config.attributes``); the URL is
    never written into the config, so passwords with ``%`` need no escaping and never leak.
    """
    _quiet_alembic_plugins()
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def _quiet_alembic_plugins() -> None:
    """Alembic logs every autogenerate plugin it sets up (on first import) at INFO; keep only
    its migration lines. Called before alembic is imported, hence the local imports here."""
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def script_directory() -> ScriptDirectory:
    """The revision scripts (for heads and history)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision id (this code's schema). There is always exactly one head."""
    heads = script_directory().get_heads()
    if len(heads) != 1:
        raise DatabaseError(f"migrations have {len(heads)} heads {heads}; merge them")
    return heads[0]


def known_revisions() -> set[str]:
    """Every revision id in the scripts."""
    return {rev.revision for rev in script_directory().walk_revisions()}


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or ``None`` for an empty (never migrated) database."""
    _quiet_alembic_plugins()
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` (default: the newest)."""
    cfg = alembic_config(engine)
    from alembic import command

    command.upgrade(cfg, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Downgrade the database to ``revision`` (``base`` drops every table)."""
    cfg = alembic_config(engine)
    from alembic import command

    command.downgrade(cfg, revision)
