"""Users and sessions: who may log in, accounts and their changes, and the demo accounts.

The one home of the account rules: login checks with throttling (:class:`LoginThrottle`,
:func:`login`), which logins stay valid (:func:`session_user`: an active account whose password
has not changed since the login, :func:`password_fingerprint`), logging out, creating and
changing users. The web layer only carries credentials (signed cookies and bearer tokens in
:mod:`inspection.api.auth`) and calls these functions. Server-side revocable sessions and
persisted throttling belong here too.

Passwords go to :mod:`inspection.db.security` (argon2id) and nowhere else: they are never
logged, never stored in the audit log, never echoed in errors. Every change is audited.

Demo accounts (:func:`seed_demo_users`) are for the local demo only; their passwords come from
``INSPECTION_DEMO_OPERATOR_PASSWORD``, ``INSPECTION_DEMO_ENGINEER_PASSWORD`` and
``INSPECTION_DEMO_ADMIN_PASSWORD``, or the documented defaults in :data:`DEMO_ACCOUNTS`. The
caller shows them once on the console (:func:`demo_accounts_text`); they are not logged.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from inspection.db import repo
from inspection.db.models import Role, User, utcnow
from inspection.db.security import hash_password, needs_rehash, verify_password
from inspection.errors import InvalidStateError, LoginThrottledError, NotFoundError
from inspection.services.uow import committed, unit_of_work

log = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 8


@functools.cache
def _dummy_hash() -> str:
    """An argon2 hash of a random string: verifying against it when the user does not exist
    costs the same time as a real check, so response times do not reveal which usernames exist.
    """
    return hash_password(secrets.token_urlsafe(16))


class InvalidCredentialsError(InvalidStateError):
    """Wrong username or password (the message never says which)."""


def check_password_policy(password: str) -> None:
    """Reject passwords shorter than :data:`MIN_PASSWORD_LENGTH` characters or blank ones."""
    if len(password) < MIN_PASSWORD_LENGTH or not password.strip():
        raise ValueError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")


def authenticate(
    session: Session, throttle: LoginThrottle, *, username: str, password: str
) -> User:
    """Check a login; record it (``last_login_at``, audit ``user.login`` or
    ``user.login_failed``) and return the user. The caller commits, also on failure.

    Raises:
        LoginThrottledError: too many recent failures for this username.
        InvalidCredentialsError: unknown user, deactivated user or wrong password.
    """
    wait = throttle.retry_after(username)
    if wait > 0:
        raise LoginThrottledError(
            f"too many failed logins for this user; try again in {wait:.0f} s", wait
        )
    user = repo.get_user_by_username(session, username)
    stored = user.password_hash if user is not None and user.password_hash else _dummy_hash()
    ok = verify_password(stored, password) and user is not None and user.is_active
    if not ok or user is None:
        throttle.failed(username)
        repo.write_audit(
            session,
            actor=f"login:{username[:64]}",
            action="user.login_failed",
            entity_type="user",
            entity_id=user.id if user is not None else username[:64],
        )
        raise InvalidCredentialsError("wrong username or password, or the account is deactivated")
    throttle.succeeded(username)
    if user.password_hash and needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_login_at = utcnow()
    repo.write_audit(
        session,
        actor=repo.Actor(name=user.username, user_id=user.id),
        action="user.login",
        entity_type="user",
        entity_id=user.id,
    )
    session.flush()
    return user


def login(session: Session, throttle: LoginThrottle, *, username: str, password: str) -> User:
    """:func:`authenticate` as one use case: committed, also when the credentials are wrong
    (the ``user.login_failed`` audit row stays).

    Raises:
        LoginThrottledError: too many recent failures for this username.
        InvalidCredentialsError: unknown user, deactivated user or wrong password.
    """
    with unit_of_work(session, commit_on=(InvalidCredentialsError,)):
        return authenticate(session, throttle, username=username, password=password)


def session_user(session: Session, *, user_id: int, fingerprint: str) -> User | None:
    """The user a login (cookie or token) belongs to while it is still valid: the account
    exists, is active and its password has not changed since the login; None otherwise."""
    user = session.get(User, user_id)
    if user is None or not user.is_active:
        return None
    if password_fingerprint(user) != fingerprint:
        return None  # the password changed since this login
    return user


def logout(session: Session, *, actor: repo.Actor) -> None:
    """Record that a user ended their session (``user.logout``); committed."""
    with unit_of_work(session):
        repo.write_audit(
            session,
            actor=actor,
            action="user.logout",
            entity_type="user",
            entity_id=actor.user_id if actor.user_id is not None else actor.name,
        )


def list_users(session: Session) -> list[User]:
    """Every user, by username."""
    return list(session.scalars(select(User).order_by(User.username)))


def create_user(
    session: Session,
    *,
    username: str,
    role: Role | str,
    password: str,
    display_name: str | None = None,
    created_by: repo.Actor | int | str | None = None,
) -> User:
    """Create an account with an argon2 hash of ``password`` (audited by the repo).

    Raises:
        InvalidStateError: the username is taken.
        ValueError: the password is too short.
    """
    check_password_policy(password)
    if repo.get_user_by_username(session, username) is not None:
        raise InvalidStateError(f"username {username!r} is already taken")
    return repo.create_user(
        session,
        username=username,
        role=Role(role),
        password_hash=hash_password(password),
        display_name=display_name,
        created_by=created_by,
    )


def update_user(
    session: Session,
    *,
    user_id: int,
    actor: repo.Actor,
    role: Role | None = None,
    is_active: bool | None = None,
    password: str | None = None,
    display_name: str | None = None,
) -> User:
    """Change a user's role, active flag, password or display name (audited, no secrets).

    Admins cannot deactivate or demote themselves, so a plant never loses its last admin by
    accident.

    Raises:
        NotFoundError: no such user.
        InvalidStateError: an admin tried to lock themselves out.
    """
    user = session.get(User, user_id)
    if user is None:
        raise NotFoundError(f"user {user_id} does not exist")
    if user.id == actor.user_id and (
        is_active is False or (role is not None and role != user.role)
    ):
        raise InvalidStateError("you cannot deactivate yourself or change your own role")
    before: dict[str, object] = {}
    after: dict[str, object] = {}
    if role is not None and role != user.role:
        before["role"], after["role"] = user.role.value, role.value
        user.role = role
    if is_active is not None and is_active != user.is_active:
        before["is_active"], after["is_active"] = user.is_active, is_active
        user.is_active = is_active
    if display_name is not None and display_name != user.display_name:
        before["display_name"], after["display_name"] = user.display_name, display_name
        user.display_name = display_name
    if password is not None:
        check_password_policy(password)
        user.password_hash = hash_password(password)
        after["password"] = "changed"
    if after:
        repo.write_audit(
            session,
            actor=actor,
            action="user.update",
            entity_type="user",
            entity_id=user.id,
            before=before,
            after=after,
        )
    session.flush()
    return user


@dataclass(frozen=True)
class DemoAccount:
    """A demo login: ``created`` is false when the account already existed (its password
    was left unchanged, so ``password`` may not be its password)."""

    username: str
    role: Role
    password: str
    env_var: str
    created: bool


#: username, role, environment variable with the password, default password (demo only).
DEMO_ACCOUNTS: tuple[tuple[str, Role, str, str], ...] = (
    ("operator", Role.OPERATOR, "INSPECTION_DEMO_OPERATOR_PASSWORD", "operator-demo"),
    ("engineer", Role.ENGINEER, "INSPECTION_DEMO_ENGINEER_PASSWORD", "engineer-demo"),
    ("admin", Role.ADMIN, "INSPECTION_DEMO_ADMIN_PASSWORD", "admin-demo"),
)


def seed_demo_users(
    session: Session, *, environ: Mapping[str, str] | None = None
) -> list[DemoAccount]:
    """Create the demo ``operator``, ``engineer`` and ``admin`` accounts when missing.

    For the local demo only. Existing accounts are left alone. The caller commits, then shows
    the result once with :func:`demo_accounts_text` (never log it).
    """
    env = os.environ if environ is None else environ
    accounts = []
    for username, role, env_var, default in DEMO_ACCOUNTS:
        password = env.get(env_var) or default
        existing = repo.get_user_by_username(session, username)
        if existing is None:
            create_user(
                session,
                username=username,
                role=role,
                password=password,
                display_name=f"Demo {role.value}",
                created_by="system:demo",
            )
        accounts.append(
            DemoAccount(
                username=username,
                role=role,
                password=password,
                env_var=env_var,
                created=existing is None,
            )
        )
    log.info("demo accounts ready: %s", ", ".join(a.username for a in accounts))
    return accounts


def demo_accounts_text(accounts: list[DemoAccount]) -> str:
    """Console text listing the demo logins (print it once; do not log it)."""
    lines = ["Demo logins (local demo only; set the variables to choose other passwords):"]
    for account in accounts:
        if account.created:
            lines.append(
                f"  {account.username:<9} {account.role.value:<9} password: {account.password}"
                f"   (${account.env_var})"
            )
        else:
            lines.append(
                f"  {account.username:<9} {account.role.value:<9} (already existed; password "
                "unchanged)"
            )
    return "\n".join(lines)


#: :func:`create_user` and :func:`update_user` as use cases (each committed).
add_user = committed(create_user)
change_user = committed(update_user)


# -- login throttling ----------------------------------------------------------------------


class LoginThrottle:
    """Slows down password guessing: after ``max_failures`` failed logins for one username
    within ``window_s`` seconds, further attempts are refused for ``lockout_s`` seconds.

    In memory and per process (one app instance per plant server); thread-safe.
    """

    def __init__(self, *, max_failures: int, lockout_s: float, window_s: float = 300.0) -> None:
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, username: str, now: float | None = None) -> float:
        """Seconds the caller must wait before trying ``username`` again (0: may try now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            failures = self._failures.get(username.lower())
            if not failures or len(failures) < self.max_failures:
                return 0.0
            wait = failures[-1] + self.lockout_s - now
            return max(0.0, wait)

    def failed(self, username: str, now: float | None = None) -> None:
        """Record a failed login for ``username``."""
        now = time.monotonic() if now is None else now
        key = username.lower()
        with self._lock:
            failures = self._failures.setdefault(key, deque(maxlen=self.max_failures))
            while failures and now - failures[0] > self.window_s:
                failures.popleft()
            failures.append(now)
            if len(self._failures) > 10_000:  # bound memory under a username spray
                self._failures.pop(next(iter(self._failures)))

    def succeeded(self, username: str) -> None:
        """Forget the failures of ``username`` after a successful login."""
        with self._lock:
            self._failures.pop(username.lower(), None)


def password_fingerprint(user: User) -> str:
    """A short digest of the user's password hash: changes whenever the password changes.

    Stored in sessions and tokens so a password reset ends existing logins. Derived from the
    hash (never the password) and truncated, so it reveals nothing useful.
    """
    source = (user.password_hash or "").encode()
    return hashlib.sha256(source).hexdigest()[:16]
