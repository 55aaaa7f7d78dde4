"""Login throttling and session validity as use cases, on SQLite and PostgreSQL: growing
lockouts per (username, address), persisted; other addresses delayed, never refused; revoked
and superseded logins invalid."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from inspection.db import repo
from inspection.db.models import LoginFailure, Role
from inspection.errors import InvalidStateError, LoginThrottledError
from inspection.services import sessions, users
from tests.db.conftest import db_url, engine, postgres_url, session

__all__ = ["db_url", "engine", "postgres_url", "session"]

PASSWORD = "a-long-fresh-secret"
T0 = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def throttle() -> sessions.LoginThrottle:
    return sessions.LoginThrottle(
        free_failures=3,
        lockout_s=10.0,
        max_lockout_s=60.0,
        window_s=600.0,
        new_address_delay_s=2.0,
        clock=Clock(),
        sleep=lambda s: None,
    )


def _attempt(
    session: Session, throttle: sessions.LoginThrottle, password: str, address: str
) -> str:
    try:
        sessions.login(session, throttle, username="Chief", password=password, address=address)
    except sessions.InvalidCredentialsError:
        return "wrong"
    except LoginThrottledError as exc:
        return f"locked {exc.retry_after_s:.0f}"
    return "ok"


def test_lockout_grows_per_address_and_spares_other_addresses(
    session: Session, throttle: sessions.LoginThrottle
) -> None:
    users.add_user(session, username="chief", role=Role.ADMIN, password=PASSWORD)
    clock = throttle.clock
    assert isinstance(clock, Clock)
    results = [_attempt(session, throttle, "wrong-password", "10.0.0.66") for _ in range(4)]
    assert results == ["wrong", "wrong", "wrong", "locked 10"]
    waits = []
    for _ in range(4):  # each failure after the lock expires doubles the lock, up to the cap
        clock.now += dt.timedelta(seconds=61)
        assert _attempt(session, throttle, "wrong-password", "10.0.0.66") == "wrong"
        waits.append(_attempt(session, throttle, PASSWORD, "10.0.0.66"))
    assert waits == ["locked 20", "locked 40", "locked 60", "locked 60"]

    slept: list[float] = []
    throttle.sleep = slept.append
    assert _attempt(session, throttle, PASSWORD, "10.0.0.7") == "ok"  # the rightful admin
    assert slept == [2.0]
    stored = session.scalar(select(func.count()).select_from(LoginFailure))
    assert stored == 1  # the attacker's address, persisted; the admin's success left none


def test_success_resets_the_address_and_old_failures_expire(
    session: Session, throttle: sessions.LoginThrottle
) -> None:
    users.add_user(session, username="chief", role=Role.ADMIN, password=PASSWORD)
    clock = throttle.clock
    assert isinstance(clock, Clock)
    for _ in range(2):
        assert _attempt(session, throttle, "nope-nope-nope", "10.0.0.5") == "wrong"
    assert _attempt(session, throttle, PASSWORD, "10.0.0.5") == "ok"
    for _ in range(2):
        assert _attempt(session, throttle, "nope-nope-nope", "10.0.0.5") == "wrong"
    clock.now += dt.timedelta(seconds=601)  # outside the window: counting starts again
    for _ in range(2):
        assert _attempt(session, throttle, "nope-nope-nope", "10.0.0.5") == "wrong"
    assert _attempt(session, throttle, PASSWORD, "10.0.0.5") == "ok"


def test_revoked_and_superseded_logins_are_invalid(session: Session) -> None:
    admin = users.add_user(session, username="chief", role=Role.ADMIN, password=PASSWORD)
    user = users.add_user(session, username="op", role=Role.OPERATOR, password=PASSWORD)
    actor = repo.Actor(name=user.username, user_id=user.id)
    fp = sessions.password_fingerprint(user)

    def valid(sid: str, generation: int = 0) -> bool:
        return (
            sessions.session_user(
                session, user_id=user.id, fingerprint=fp, generation=generation, sid=sid
            )
            is not None
        )

    assert valid("a") and valid("b")
    sessions.logout(session, actor=actor, sid="a", expires_at=T0 + dt.timedelta(days=1))
    assert not valid("a") and valid("b")
    sessions.sign_out_everywhere(
        session, user_id=user.id, actor=repo.Actor(name="chief", user_id=admin.id)
    )
    assert not valid("b") and valid("b", generation=1)


def test_case_insensitive_usernames_and_password_policy(session: Session) -> None:
    users.add_user(session, username="OP1", role=Role.OPERATOR, password=PASSWORD)
    with pytest.raises(InvalidStateError, match="already taken"):
        users.add_user(session, username="op1", role=Role.OPERATOR, password=PASSWORD)
    found = repo.get_user_by_username(session, "oP1")
    assert found is not None and found.username == "OP1"
    for weak in ("short-pw", "password1234", "PASSWORD1234", "zzzzzzzzzzzzzz", "operator.two"):
        with pytest.raises(ValueError, match="password"):
            users.add_user(session, username="operator.two", role=Role.OPERATOR, password=weak)
