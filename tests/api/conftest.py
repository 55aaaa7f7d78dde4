"""Fixtures for the review app: a migrated SQLite database seeded once per session with demo
accounts and synthetic inspections, copied fresh for every test, and clients on it.

Accounts (defaults of :data:`inspection.services.users.DEMO_ACCOUNTS`): ``operator`` /
``operator-demo``, ``engineer`` / ``engineer-demo``, ``admin`` / ``admin-demo-pass``.
Bearer tokens are signed directly (logins cost an argon2 check each, about half a second).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.orm import Session

from inspection.api.app import create_app
from inspection.api.auth import TokenSigner
from inspection.api.seed import ensure_defect_types, seed_synthetic_inspections
from inspection.api.server import RunningServer, start_in_thread
from inspection.api.settings import ApiSettings
from inspection.db import migrate, repo
from inspection.db.engine import make_engine, make_session_factory
from inspection.services.users import seed_demo_users
from inspection.storage import LocalArtifactStore
from tests.api.browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS

SECRET = "test-secret-key-" + "x" * 32
METRICS_TOKEN = "test-metrics-token"
PASSWORDS = {"operator": "operator-demo", "engineer": "engineer-demo", "admin": "admin-demo-pass"}
N_PER_STATION = 40


@dataclass(frozen=True)
class Template:
    """The seeded database file and artifact folder every test starts from."""

    db_file: Path
    artifacts: Path
    n_inspections: int


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    """Migrate and seed one database per test session."""
    root = tmp_path_factory.mktemp("api-template")
    db_file = root / "inspection.db"
    artifacts = root / "artifacts"
    engine = make_engine(f"sqlite:///{db_file}")
    try:
        migrate.upgrade(engine)
        factory = make_session_factory(engine)
        with factory() as session, session.begin():
            seed_demo_users(session, environ={})
            ensure_defect_types(session)
            summary = seed_synthetic_inspections(
                session, LocalArtifactStore(artifacts), n_per_station=N_PER_STATION, seed=1
            )
    finally:
        engine.dispose()  # closing the last connection checkpoints the WAL into the file
    return Template(db_file=db_file, artifacts=artifacts, n_inspections=len(summary.inspection_ids))


@pytest.fixture
def settings(template: Template, tmp_path: Path) -> ApiSettings:
    """Settings on a fresh copy of the template database (artifacts shared, read-only)."""
    db_file = tmp_path / "inspection.db"
    shutil.copyfile(template.db_file, db_file)
    wal = template.db_file.with_name(template.db_file.name + "-wal")
    if wal.exists():
        shutil.copyfile(wal, db_file.with_name(db_file.name + "-wal"))
    return ApiSettings(
        database_url=f"sqlite:///{db_file}",
        artifact_root=template.artifacts,
        secret_key=SecretStr(SECRET),
        login_lockout_s=30.0,
        metrics_token=SecretStr(METRICS_TOKEN),
    )


@pytest.fixture
def app(settings: ApiSettings) -> FastAPI:
    """The app on the test's database copy."""
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """A test client (lifespan run: the schema check passes)."""
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def session(settings: ApiSettings) -> Iterator[Session]:
    """A read-only session on the test's database, for checking what the API stored (roll back
    before each check to see the newest data; it never holds the write lock)."""
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine, read_only=True)
    with factory() as sess:
        yield sess
    engine.dispose()


def bearer(session: Session, username: str) -> dict[str, str]:
    """An ``Authorization`` header for ``username`` signed with the test secret."""
    user = repo.get_user_by_username(session, username)
    assert user is not None
    signer = TokenSigner(SECRET, session_max_age_s=3600, token_max_age_s=3600)
    return {"Authorization": f"Bearer {signer.new_token(user)}"}


@pytest.fixture
def auth(session: Session) -> dict[str, dict[str, str]]:
    """Bearer headers by role name: ``auth["operator"]``, ``auth["engineer"]``, ``auth["admin"]``."""
    headers = {name: bearer(session, name) for name in PASSWORDS}
    session.rollback()
    return headers


def ui_login(client: TestClient, username: str, password: str | None = None) -> str:
    """Log in through the login form; return the session's CSRF token (from the page meta)."""
    import re

    page = client.get("/login")
    token = re.search(r'name="login_csrf" value="([^"]+)"', page.text)
    assert token is not None
    response = client.post(
        "/login",
        data={
            "username": username,
            "password": password or PASSWORDS[username],
            "login_csrf": token.group(1),
            "next": "/",
        },
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    home = client.get("/")
    csrf = re.search(r'<meta name="csrf-token" content="([^"]*)"', home.text)
    assert csrf is not None and csrf.group(1)
    return csrf.group(1)


def count(session: Session, sql: str, **params: object) -> int:
    """``SELECT count(*) ...`` helper (a fresh read each time)."""
    session.rollback()
    return int(session.execute(text(sql), params).scalar_one())


# -- browser tests (Debian chromium + Playwright; helpers in tests/api/browser.py) -------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium driven by Playwright (skips when either is missing)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's 'chromium' (make system-deps)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def server(settings: ApiSettings) -> Iterator[RunningServer]:
    """The review app on a free localhost port."""
    with start_in_thread(settings) as running:
        yield running


@pytest.fixture
def page(browser: Any, server: RunningServer) -> Iterator[Any]:
    """A fresh browser tab (1440x900) that fails the test on JavaScript errors."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield tab
    context.close()
    assert not errors, f"JavaScript errors: {errors}"
