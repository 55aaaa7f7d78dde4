"""``inspection users ...``, ``inspection serve --help``, demo accounts and the auth helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from inspection.api.auth import TokenSigner
from inspection.api.cli import serve_command, users_app
from inspection.db import migrate, repo
from inspection.db.engine import make_engine, make_session_factory
from inspection.db.models import Role, User
from inspection.db.security import verify_password
from inspection.services.users import (
    DEMO_ACCOUNTS,
    demo_accounts_text,
    seed_demo_users,
)

runner = CliRunner()


def test_users_add_and_list(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'u.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    result = runner.invoke(
        users_app,
        ["add", "chief", "--role", "admin", "--db", url],
        env={"INSPECTION_NEW_USER_PASSWORD": "chief-password"},
    )
    assert result.exit_code == 0, result.output
    assert "chief-password" not in result.output
    with make_session_factory(engine)() as session:
        user = repo.get_user_by_username(session, "chief")
        assert user is not None and user.role == Role.ADMIN
        assert verify_password(user.password_hash or "", "chief-password")
    again = runner.invoke(
        users_app,
        ["add", "chief", "--role", "admin", "--db", url],
        env={"INSPECTION_NEW_USER_PASSWORD": "chief-password"},
    )
    assert again.exit_code == 1 and "already taken" in again.output
    bad_role = runner.invoke(users_app, ["add", "x1x", "--role", "king", "--db", url])
    assert bad_role.exit_code == 2
    listed = runner.invoke(users_app, ["list", "--db", url])
    assert "chief" in listed.output and "admin" in listed.output
    engine.dispose()


def test_serve_help() -> None:
    import typer

    app = typer.Typer()
    app.command("serve")(serve_command)
    app.command("noop")(lambda: None)
    result = runner.invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    assert "--port" in result.output and "--db" in result.output


def test_seed_demo_users_reads_env_and_is_idempotent(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'd.db'}")
    migrate.upgrade(engine)
    env = {"INSPECTION_DEMO_ADMIN_PASSWORD": "custom-admin-pw"}
    with make_session_factory(engine)() as session, session.begin():
        accounts = seed_demo_users(session, environ=env)
    assert [a.username for a in accounts] == [a[0] for a in DEMO_ACCOUNTS]
    assert accounts[2].password == "custom-admin-pw" and accounts[0].password == "operator-demo"
    text = demo_accounts_text(accounts)
    assert "custom-admin-pw" in text and "INSPECTION_DEMO_ADMIN_PASSWORD" in text
    with make_session_factory(engine)() as session, session.begin():
        again = seed_demo_users(session, environ={})
        assert not any(a.created for a in again)
        admin = repo.get_user_by_username(session, "admin")
        assert isinstance(admin, User) and verify_password(
            admin.password_hash or "", "custom-admin-pw"
        )
    assert "already existed" in demo_accounts_text(again)
    engine.dispose()


def test_token_signer_rejects_tampering_and_other_keys() -> None:
    user = User(id=7, username="u", role=Role.OPERATOR, password_hash="h", is_active=True)
    signer = TokenSigner("k" * 32, session_max_age_s=60, token_max_age_s=60)
    token = signer.new_token(user)
    claims = signer.read_token(token)
    assert claims is not None and claims.user_id == 7
    assert signer.read_token(token[:-2] + "xx") is None
    assert signer.read_session(token) is None  # a token is not a session cookie
    other = TokenSigner("z" * 32, session_max_age_s=60, token_max_age_s=60)
    assert other.read_token(token) is None
    cookie, csrf = signer.new_session(user)
    session = signer.read_session(cookie)
    assert session is not None and session.csrf == csrf


def test_serve_demo_preparation_seeds_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sqlalchemy import func, select

    from inspection.api.cli import _api_settings, _prepare_demo
    from inspection.db.models import Inspection

    settings = _api_settings(f"sqlite:///{tmp_path / 'demo.db'}", tmp_path / "artifacts")
    _prepare_demo(settings)
    _prepare_demo(settings)  # second run: accounts exist, inspections are not added again
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        assert session.scalar(select(func.count()).select_from(Inspection)) == 240
        assert repo.get_user_by_username(session, "engineer") is not None
    engine.dispose()


def test_start_in_thread_reports_a_taken_port(tmp_path: Path) -> None:
    import socket

    from inspection.api.server import ServerStartError, start_in_thread
    from inspection.api.settings import ApiSettings

    url = f"sqlite:///{tmp_path / 's.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerStartError, match="cannot listen"):
            start_in_thread(ApiSettings(database_url=url, secret_key="k" * 32), port=port)
    with start_in_thread(ApiSettings(database_url=url, secret_key="k" * 32)) as running:
        import httpx

        assert httpx.get(f"{running.url}/api/health").json() == {"status": "ok"}
