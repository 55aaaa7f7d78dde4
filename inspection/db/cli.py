"""``inspection db``: upgrade/downgrade the schema, show the revision, regenerate docs/schema.md.

The database URL comes from ``--url`` or ``INSPECTION_DATABASE_URL`` (default
``sqlite:///var/inspection.db``); it is only ever printed with the password masked.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from sqlalchemy.exc import DBAPIError

from inspection.db.settings import get_settings, mask_url
from inspection.errors import DatabaseError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

app = typer.Typer(
    help="Database schema: upgrade, downgrade, current revision, schema doc.",
    no_args_is_help=True,
    # Tracebacks with locals would print the database URL, password included.
    pretty_exceptions_show_locals=False,
)
console = Console()

_URL_OPTION = typer.Option(
    None,
    "--url",
    help="SQLAlchemy database URL (default: INSPECTION_DATABASE_URL or sqlite:///var/inspection.db).",
)


def _url(url: str | None) -> str:
    return url or get_settings().database_url


def _fail(exc: Exception) -> typer.Exit:
    if isinstance(exc, DBAPIError):
        first = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        message = f"cannot use the database: {first}"
    else:
        message = str(exc)
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=1)


@contextmanager
def _database(target: str) -> Iterator[Engine]:
    """An engine on ``target``, disposed afterwards; a database error inside ends the command
    with its message (exit 1) instead of a traceback."""
    from inspection.db.engine import make_engine

    engine = make_engine(target)
    try:
        yield engine
    except (DatabaseError, DBAPIError) as exc:
        raise _fail(exc) from exc
    finally:
        engine.dispose()


@app.command()
def upgrade(
    revision: str = typer.Argument("head", help="Target revision (default: newest)."),
    url: str | None = _URL_OPTION,
) -> None:
    """Create or upgrade the database schema (run after every software update)."""
    from inspection.db import migrate

    target = _url(url)
    with _database(target) as engine:
        before = migrate.current_revision(engine)
        migrate.upgrade(engine, revision)
        after = migrate.current_revision(engine)
    console.print(f"{mask_url(target)}: {before or '<empty>'} -> {after}")


@app.command()
def downgrade(
    revision: str = typer.Argument(..., help="Target revision, e.g. -1 or base (drops all)."),
    url: str | None = _URL_OPTION,
    yes: bool = typer.Option(False, "--yes", help="Do not ask before downgrading."),
) -> None:
    """Downgrade the schema (may drop tables and data)."""
    from inspection.db import migrate

    target = _url(url)
    if not yes:
        typer.confirm(f"Downgrade {mask_url(target)} to {revision}? Data may be lost", abort=True)
    with _database(target) as engine:
        migrate.downgrade(engine, revision)
        after = migrate.current_revision(engine)
    console.print(f"{mask_url(target)}: now at {after or '<empty>'}")


@app.command()
def current(url: str | None = _URL_OPTION) -> None:
    """Show the database's revision and whether it is at head (exit 1 when not)."""
    from inspection.db import migrate

    target = _url(url)
    with _database(target) as engine:
        rev = migrate.current_revision(engine)
        head = migrate.head_revision()
    state = "at head" if rev == head else f"NOT at head {head}; run `inspection db upgrade`"
    console.print(f"{mask_url(target)}: {rev or '<empty>'} ({state})")
    if rev != head:
        raise typer.Exit(code=1)


@app.command("schema-doc")
def schema_doc(
    output: Path = typer.Option(Path("docs/schema.md"), "--output", "-o", help="File to write."),
) -> None:
    """Regenerate the schema documentation from the models."""
    from inspection.db.schema_doc import write_schema_doc

    console.print(f"wrote {write_schema_doc(output)}")
