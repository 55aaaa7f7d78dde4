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


def settings_on_copy(template: Template, folder: Path) -> ApiSettings:
    """Settings on a fresh copy of the template database in ``folder`` (artifacts shared,
    read-only)."""
    db_file = folder / "inspection.db"
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
def settings(template: Template, tmp_path: Path) -> ApiSettings:
    """Settings on a fresh copy of the template database (artifacts shared, read-only)."""
    return settings_on_copy(template, tmp_path)


@pytest.fixture
def app(settings: ApiSettings) -> FastAPI:
    """The app on the test's database copy."""
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """A test client (lifespan run: the schema check passes)."""
    with TestClient(app) as test_client:
        yield test_client


def read_session(settings: ApiSettings) -> Iterator[Session]:
    """A read-only session on the settings' database."""
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine, read_only=True)
    with factory() as sess:
        yield sess
    engine.dispose()


@pytest.fixture
def session(settings: ApiSettings) -> Iterator[Session]:
    """A read-only session on the test's database, for checking what the API stored (roll back
    before each check to see the newest data; it never holds the write lock)."""
    yield from read_session(settings)


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


# -- browser tests at the four viewports of #19, on one app per test module -----------------

#: The viewport sizes every operator-facing check runs at (issue #19's acceptance).
VIEWPORTS = [(1024, 700), (1280, 720), (1366, 900), (1920, 1080)]


@pytest.fixture(scope="module")
def shared_settings(template: Template, tmp_path_factory: pytest.TempPathFactory) -> ApiSettings:
    """Settings on one copy of the template database for the whole test module: the module's
    tests share its state (labels, promotions), so each is written to hold on what the
    previous ones left."""
    return settings_on_copy(template, tmp_path_factory.mktemp("shared-app"))


@pytest.fixture(scope="module")
def shared_server(shared_settings: ApiSettings) -> Iterator[RunningServer]:
    """The review app on the module's database, served once per module."""
    with start_in_thread(shared_settings) as running:
        yield running


@pytest.fixture
def shared_session(shared_settings: ApiSettings) -> Iterator[Session]:
    """A read-only session on the module's database (roll back before each check)."""
    yield from read_session(shared_settings)


@pytest.fixture(scope="module")
def logged_in(browser: Any, shared_server: RunningServer) -> Any:
    """``logged_in(role)``: that role's browser storage state (cookies) on the module's app,
    logged in once per module with the keyboard (each login is an argon2 check)."""
    from tests.api.browser import login

    states: dict[str, Any] = {}

    def state(role: str) -> Any:
        if role not in states:
            context = browser.new_context()
            tab = context.new_page()
            tab.set_default_timeout(TIMEOUT_MS)
            login(tab, shared_server.url, role)
            states[role] = context.storage_state()
            context.close()
        return states[role]

    return state


@pytest.fixture(params=VIEWPORTS, ids=[f"{w}x{h}" for w, h in VIEWPORTS])
def viewport(request: pytest.FixtureRequest) -> dict[str, int]:
    """One of the four viewport sizes (a test asking for it runs once per size)."""
    width, height = request.param
    return {"width": width, "height": height}


class Tabs:
    """``tabs(role)`` opens a fresh browser tab at the test's viewport, logged in as ``role``
    on the module's app (``None``: logged out). Every JavaScript error or failed request in any
    of its tabs fails the test, except console messages containing a text passed to
    :meth:`allow` (an error page the test asks for logs its status)."""

    def __init__(self, browser: Any, logged_in: Any, viewport: dict[str, int]) -> None:
        self.browser, self.logged_in, self.viewport = browser, logged_in, viewport
        self.contexts: list[Any] = []
        self.errors: list[str] = []
        self.allowed: list[str] = []

    def __call__(self, role: str | None, **options: Any) -> Any:
        state = self.logged_in(role) if role else None
        context = self.browser.new_context(viewport=self.viewport, storage_state=state, **options)
        self.contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", self._console)
        return page

    def allow(self, text: str) -> None:
        """Console errors containing ``text`` are expected (e.g. ``"status of 404"``)."""
        self.allowed.append(text)

    def _console(self, msg: Any) -> None:
        if msg.type == "error" and not any(text in msg.text for text in self.allowed):
            self.errors.append(msg.text)

    def close(self) -> None:
        for context in self.contexts:
            context.close()
        assert not self.errors, f"JavaScript errors: {self.errors}"


@pytest.fixture
def tab(browser: Any, logged_in: Any, viewport: dict[str, int]) -> Iterator[Tabs]:
    """A :class:`Tabs` at the test's viewport on the module's app."""
    tabs = Tabs(browser, logged_in, viewport)
    yield tabs
    tabs.close()
