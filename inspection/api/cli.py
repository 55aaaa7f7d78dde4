"""``inspection serve`` (the review UI and API) and ``inspection users ...`` (accounts).

Heavy imports (FastAPI, uvicorn) happen inside the commands, so ``inspection --help`` stays
fast. Passwords come from an environment variable or a hidden prompt, never from the command
line (where ``ps`` and shell history would show them).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from inspection.api.settings import ApiSettings

console = Console()

NEW_PASSWORD_ENV = "INSPECTION_NEW_USER_PASSWORD"

users_app = typer.Typer(help="User accounts of the review UI.", no_args_is_help=True)


def _api_settings(db: str | None, artifacts: Path | None, **extra: Any) -> ApiSettings:
    from inspection.api.settings import ApiSettings

    values: dict[str, Any] = dict(extra)
    if db:
        values["database_url"] = db
    if artifacts is not None:
        values["artifact_root"] = artifacts
    return ApiSettings(**values)


def serve_command(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0: all)."),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port."),
    db: str | None = typer.Option(
        None, "--db", help="Database URL (default: INSPECTION_DATABASE_URL or var/inspection.db)."
    ),
    artifacts: Path | None = typer.Option(
        None, help="Artifact store folder (default: INSPECTION_API_ARTIFACT_ROOT or var/artifacts)."
    ),
    migrate: bool = typer.Option(
        False, "--migrate", help="Upgrade the database schema first (else refuse if behind)."
    ),
    demo: bool = typer.Option(
        False,
        "--demo",
        help="Local demo: migrate, create demo accounts and synthetic inspections if empty.",
    ),
) -> None:
    """Serve the operator review UI and the REST API (docs at /docs)."""
    from inspection.api.server import serve
    from inspection.errors import InspectionError

    settings = _api_settings(db, artifacts, auto_migrate=migrate or demo)
    try:
        if demo:
            _prepare_demo(settings)
        console.print(f"review UI on [bold]http://{host}:{port}/[/bold]  (API docs at /docs)")
        serve(settings, host=host, port=port)
    except InspectionError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from exc


def _prepare_demo(settings: ApiSettings) -> None:
    from sqlalchemy import func, select

    from inspection.api.seed import ensure_defect_types, seed_synthetic_inspections
    from inspection.db import migrate
    from inspection.db.engine import make_engine, make_session_factory
    from inspection.db.models import Inspection
    from inspection.services.users import demo_accounts_text, seed_demo_users
    from inspection.storage import LocalArtifactStore

    engine = make_engine(settings.database_url)
    try:
        migrate.upgrade(engine)
        factory = make_session_factory(engine)
        with factory() as session, session.begin():
            accounts = seed_demo_users(session)
            ensure_defect_types(session)
            if not session.scalar(select(func.count()).select_from(Inspection)):
                seed_synthetic_inspections(
                    session, LocalArtifactStore(settings.artifact_root), n_per_station=80
                )
    finally:
        engine.dispose()
    console.print(demo_accounts_text(accounts), markup=False, highlight=False)


def _read_password(username: str) -> str:
    from_env = os.environ.get(NEW_PASSWORD_ENV)
    if from_env:
        return from_env
    return str(typer.prompt(f"Password for {username}", hide_input=True, confirmation_prompt=True))


@users_app.command("add")
def add_user(
    username: str = typer.Argument(..., help="Login name (3-64 letters, digits, . _ -)."),
    role: str = typer.Option(..., "--role", help="operator, engineer or admin."),
    display_name: str | None = typer.Option(None, help="Name shown in the UI."),
    db: str | None = typer.Option(None, "--db", help="Database URL."),
) -> None:
    """Create an account (e.g. the first admin). Password: $INSPECTION_NEW_USER_PASSWORD or a
    hidden prompt."""
    import re

    from inspection.api.schemas import USERNAME_PATTERN
    from inspection.db.engine import make_engine, make_session_factory, run_in_transaction
    from inspection.db.models import Role
    from inspection.db.settings import get_settings
    from inspection.errors import InspectionError
    from inspection.services.users import create_user

    try:
        role_value = Role(role)
    except ValueError:
        console.print(f"[red]error:[/red] unknown role {role!r}; use operator, engineer or admin")
        raise typer.Exit(code=2) from None
    if not re.fullmatch(USERNAME_PATTERN, username):
        console.print("[red]error:[/red] usernames are 3-64 letters, digits, '.', '_' or '-'")
        raise typer.Exit(code=2)
    password = _read_password(username)
    engine = make_engine(db or get_settings().database_url)
    try:
        factory = make_session_factory(engine)
        run_in_transaction(
            factory,
            lambda s: create_user(
                s,
                username=username,
                role=role_value,
                password=password,
                display_name=display_name,
                created_by="cli",
            ),
            what="create user",
        )
    except (InspectionError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from exc
    finally:
        engine.dispose()
    console.print(f"created {role_value.value} [bold]{username}[/bold]")


@users_app.command("list")
def list_users(db: str | None = typer.Option(None, "--db", help="Database URL.")) -> None:
    """List accounts (never passwords)."""
    from rich.table import Table

    from inspection.db.engine import make_engine, make_session_factory
    from inspection.db.settings import get_settings
    from inspection.services.users import list_users as query_users

    engine = make_engine(db or get_settings().database_url)
    try:
        with make_session_factory(engine, read_only=True)() as session:
            rows = query_users(session)
            table = Table("username", "role", "active", "last login")
            for user in rows:
                table.add_row(
                    user.username,
                    user.role.value,
                    "yes" if user.is_active else "no",
                    user.last_login_at.isoformat(timespec="seconds") if user.last_login_at else "-",
                )
    finally:
        engine.dispose()
    console.print(table)
