"""Helpers of the browser tests (headless Debian Chromium driven by Playwright): constants,
keyboard login, polling without ``wait_for_function`` (our CSP forbids it), screenshots, and the
review page's selection. The fixtures (``browser``, ``server``, ``page``) live in
``tests/api/conftest.py``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 20_000


def shot(page: Any, name: str, *, full_page: bool = True) -> None:
    """Save a screenshot under test-artifacts/ once the page's images have loaded."""
    ARTIFACTS.mkdir(exist_ok=True)
    deadline = time.monotonic() + 10
    visible_loaded = (
        "() => Array.from(document.images).every("
        "i => i.complete || i.getBoundingClientRect().top > window.innerHeight)"
    )
    while not page.evaluate(visible_loaded):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    page.screenshot(path=str(ARTIFACTS / f"ui-{name}.png"), full_page=full_page)


def login(page: Any, base: str, username: str) -> None:
    """Log in with the keyboard: type the username, Tab, the password, Enter."""
    from tests.api.conftest import PASSWORDS  # conftest imports this module

    page.goto(f"{base}/login")
    page.wait_for_selector("#username:focus")
    page.keyboard.type(username)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORDS[username])
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/")


def wait_for(page: Any, expression: str, arg: object = None, timeout_s: float = 20.0) -> None:
    """Poll a JavaScript function until it returns true (``wait_for_function`` compiles its
    predicate inside the page, which our Content-Security-Policy rightly forbids)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression, arg):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.02)


def current_id(page: Any) -> int:
    value = page.get_attribute("#review", "data-current-id")
    assert value, "no inspection selected"
    return int(value)


def wait_selected(page: Any, previous: int) -> int:
    """Wait until the selection moved away from ``previous``; return the new id."""
    wait_for(
        page,
        "prev => document.getElementById('review').dataset.currentId !== String(prev)",
        previous,
    )
    return current_id(page)
