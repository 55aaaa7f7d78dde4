"""Logins and sessions: who may log in (with throttling), which logins stay valid, ending them.

Every login (a session cookie or a bearer token, carried by :mod:`inspection.api.auth`) names
its user, the user's password fingerprint and session generation, and a random session id. It
stays valid while (:func:`session_user`):

* the account exists and is active,
* its password has not changed (:func:`password_fingerprint`),
* its ``session_generation`` has not moved on: changing the password, deactivating the account
  and "sign out everywhere" (:func:`sign_out_everywhere`) raise it, ending every login at once,
* its session id was not revoked: ``POST /logout`` and ``POST /api/auth/logout`` end the one
  login that was presented (:func:`logout`).

Failed logins are throttled per (username, client address) and persisted
(:class:`LoginThrottle`, table ``login_failure``): after ``free_failures`` failures from one
address that address is refused for ``lockout_s``, doubling with every further failure up to
``max_lockout_s``. Other addresses are never refused because of it, so nobody can lock the admin
out; while a username has that many recent failures, every attempt on it is delayed by
``new_address_delay_s`` instead, which slows an attacker who rotates addresses.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from inspection.db import logins, repo
from inspection.db.models import LoginFailure, User, utcnow
from inspection.db.security import hash_password, needs_rehash, verify_password
from inspection.errors import InvalidStateError, LoginThrottledError, NotFoundError
from inspection.services.uow import unit_of_work

log = logging.getLogger(__name__)


class InvalidCredentialsError(InvalidStateError):
    """Wrong username or password (the message never says which)."""


@functools.cache
def _dummy_hash() -> str:
    """An argon2 hash of a random string: verifying against it when the user does not exist
    costs the same time as a real check, so response times do not reveal which usernames exist.
    """
    return hash_password(secrets.token_urlsafe(16))


def password_fingerprint(user: User) -> str:
    """A short digest of the user's password hash: changes whenever the password changes.

    Stored in sessions and tokens so a password reset ends existing logins. Derived from the
    hash (never the password) and truncated, so it reveals nothing useful.
    """
    source = (user.password_hash or "").encode()
    return hashlib.sha256(source).hexdigest()[:16]


def new_session_id() -> str:
    """A random id for one login (what logout revokes)."""
    return secrets.token_urlsafe(18)


# -- throttling ----------------------------------------------------------------------------


@dataclass
class LoginThrottle:
    """The throttling policy (the state is in the database, table ``login_failure``).

    ``clock`` and ``sleep`` are injectable so tests need neither real time nor waiting.
    """

    free_failures: int = 5
    lockout_s: float = 30.0
    max_lockout_s: float = 900.0
    window_s: float = 3600.0
    new_address_delay_s: float = 2.0
    clock: Callable[[], dt.datetime] = field(default=utcnow)
    sleep: Callable[[float], None] = field(default=time.sleep)

    def lock_for(self, failures: int) -> float:
        """Seconds one address is refused after its ``failures``-th failure in the window."""
        if failures < self.free_failures:
            return 0.0
        return min(self.lockout_s * 2.0 ** (failures - self.free_failures), self.max_lockout_s)

    def decide(
        self, records: list[LoginFailure], address: str, now: dt.datetime
    ) -> tuple[float, float]:
        """``(refuse_s, delay_s)`` for an attempt on a username from ``address``: refused for
        ``refuse_s`` more seconds (this address is locked), or allowed after ``delay_s``."""
        recent = [
            r for r in records if (now - _aware(r.last_failure_at)).total_seconds() < self.window_s
        ]
        for record in recent:
            if record.address == address[:64] and record.locked_until is not None:
                left = (_aware(record.locked_until) - now).total_seconds()
                if left > 0:
                    return left, 0.0
        if sum(r.failures for r in recent) >= self.free_failures:
            return 0.0, self.new_address_delay_s
        return 0.0, 0.0


def _aware(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _record_failure(session: Session, throttle: LoginThrottle, username: str, address: str) -> None:
    now = throttle.clock()
    own = next(
        (r for r in logins.login_failures(session, username) if r.address == address[:64]), None
    )
    failures = 1
    if own is not None and (now - _aware(own.last_failure_at)).total_seconds() < throttle.window_s:
        failures = own.failures + 1
    lock = throttle.lock_for(failures)
    logins.save_login_failure(
        session,
        username=username,
        address=address,
        failures=failures,
        at=now,
        locked_until=now + dt.timedelta(seconds=lock) if lock > 0 else None,
    )
    logins.purge_login_failures(session, before=now - dt.timedelta(seconds=throttle.window_s))


def _refuse_if_locked(
    session: Session, throttle: LoginThrottle, username: str, address: str
) -> float:
    """Raise when ``address`` is locked out of ``username``; else the delay to apply."""
    refuse, delay = throttle.decide(
        logins.login_failures(session, username), address, throttle.clock()
    )
    if refuse > 0:
        raise LoginThrottledError(
            f"too many failed logins for this user from this address; try again in {refuse:.0f} s",
            refuse,
        )
    return delay


# -- login ---------------------------------------------------------------------------------


def authenticate(
    session: Session,
    throttle: LoginThrottle,
    *,
    username: str,
    password: str,
    address: str = "unknown",
) -> User:
    """Check a login from client ``address``; record it (``last_login_at``, the failure count,
    audit ``user.login`` or ``user.login_failed``) and return the user. Does not delay (see
    :func:`login`) and does not commit.

    Raises:
        LoginThrottledError: this address failed too often for this username lately.
        InvalidCredentialsError: unknown user, deactivated user or wrong password.
    """
    _refuse_if_locked(session, throttle, username, address)
    user = repo.get_user_by_username(session, username)
    stored = user.password_hash if user is not None and user.password_hash else _dummy_hash()
    ok = verify_password(stored, password) and user is not None and user.is_active
    if not ok or user is None:
        _record_failure(session, throttle, username, address)
        repo.audit(
            session,
            "user.login_failed",
            user.id if user is not None else username[:64],
            actor=f"login:{username[:64]}",
            after={"address": address[:64]},
        )
        raise InvalidCredentialsError("wrong username or password, or the account is deactivated")
    logins.clear_login_failures(session, username=username, address=address)
    if user.password_hash and needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_login_at = utcnow()
    repo.audit(
        session,
        "user.login",
        user.id,
        actor=repo.Actor(name=user.username, user_id=user.id),
        after={"address": address[:64]},
    )
    session.flush()
    return user


def login(
    session: Session,
    throttle: LoginThrottle,
    *,
    username: str,
    password: str,
    address: str = "unknown",
) -> User:
    """:func:`authenticate` as one use case, after the throttle's delay (waited outside any
    transaction); committed, also when the credentials are wrong (the failure counts).

    Raises:
        LoginThrottledError: this address failed too often for this username lately.
        InvalidCredentialsError: unknown user, deactivated user or wrong password.
    """
    with unit_of_work(session):
        delay = _refuse_if_locked(session, throttle, username, address)
    if delay > 0:
        log.info("login for a username with many recent failures: delayed %.1f s", delay)
        throttle.sleep(delay)
    with unit_of_work(session, commit_on=(InvalidCredentialsError,)):
        return authenticate(
            session, throttle, username=username, password=password, address=address
        )


# -- sessions ------------------------------------------------------------------------------


def session_user(
    session: Session, *, user_id: int, fingerprint: str, generation: int, sid: str
) -> User | None:
    """The user a login (cookie or token) belongs to while it is still valid (see the module
    docstring); None otherwise."""
    user = session.get(User, user_id)
    if user is None or not user.is_active:
        return None
    if password_fingerprint(user) != fingerprint or user.session_generation != generation:
        return None
    if logins.is_session_revoked(session, sid):
        return None
    return user


def logout(session: Session, *, actor: repo.Actor, sid: str, expires_at: dt.datetime) -> None:
    """End the login ``sid`` (kept revoked until ``expires_at``, when it would expire anyway)
    and record it (``user.logout``); committed."""
    with unit_of_work(session):
        if actor.user_id is not None:
            logins.revoke_session(session, sid=sid, user_id=actor.user_id, expires_at=expires_at)
        repo.audit(
            session,
            "user.logout",
            actor.user_id if actor.user_id is not None else actor.name,
            actor=actor,
        )


def end_all_sessions(user: User) -> None:
    """Invalidate every login of ``user`` (raise its session generation); the caller audits
    and commits."""
    user.session_generation = (user.session_generation or 0) + 1


def sign_out_everywhere(session: Session, *, user_id: int, actor: repo.Actor) -> User:
    """End every session and token of a user (admin action, or a user for themselves);
    audited ``user.sign_out_everywhere``; committed.

    Raises:
        NotFoundError: no such user.
    """
    with unit_of_work(session):
        user = session.get(User, user_id)
        if user is None:
            raise NotFoundError(f"user {user_id} does not exist")
        end_all_sessions(user)
        repo.audit(session, "user.sign_out_everywhere", user.id, actor=actor)
        session.flush()
        return user
