"""User accounts: creating and changing them, the password policy, and the demo accounts.

Logging in, which logins stay valid and ending them live in :mod:`inspection.services.sessions`;
changing a password or deactivating an account ends all of the user's sessions through it.

Usernames are unique regardless of case. Passwords need :data:`MIN_PASSWORD_LENGTH` characters
and must not be on the common-password list shipped with the package
(``inspection/services/common_passwords.txt``) or equal the username
(:func:`check_password_policy`).

Passwords go to :mod:`inspection.db.security` (argon2id) and nowhere else: they are never
logged, never stored in the audit log, never echoed in errors. Every change is audited.

Demo accounts (:func:`seed_demo_users`) are for the local demo only; their passwords come from
``INSPECTION_DEMO_OPERATOR_PASSWORD``, ``INSPECTION_DEMO_ENGINEER_PASSWORD`` and
``INSPECTION_DEMO_ADMIN_PASSWORD``, or the documented defaults in :data:`DEMO_ACCOUNTS`. The
caller shows them once on the console (:func:`demo_accounts_text`); they are not logged.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from inspection.db import repo
from inspection.db.models import Role, User
from inspection.db.security import hash_password
from inspection.errors import InvalidStateError, NotFoundError
from inspection.services import sessions
from inspection.services.uow import committed

log = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 12


@functools.cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords (lower-case), read once."""
    text = resources.files("inspection.services").joinpath("common_passwords.txt").read_text()
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and line[0] != "#"
    )


def check_password_policy(password: str, *, username: str | None = None) -> None:
    """Reject passwords shorter than :data:`MIN_PASSWORD_LENGTH` characters, blank ones, common
    ones (:func:`common_passwords`, regardless of case; or fewer than 4 distinct characters) and
    the username itself.

    Raises:
        ValueError: the password breaks the policy (the message says which rule, never the
            password).
    """
    if len(password) < MIN_PASSWORD_LENGTH or not password.strip():
        raise ValueError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    lowered = password.strip().lower()
    if lowered in common_passwords() or len(set(lowered)) < 4:
        raise ValueError("password is too common: choose one that is not on a common-password list")
    if username is not None and username.strip().lower() == lowered:
        raise ValueError("password must not be the username")


def list_users(session: Session) -> list[User]:
    """Every user, by username."""
    return list(session.scalars(select(User).order_by(User.username)))


class NewAccount(Protocol):
    """An account as a person asks for it (the API's ``UserIn``, the admin page's form,
    :class:`AccountRequest`)."""

    @property
    def username(self) -> str: ...
    @property
    def role(self) -> Role | str: ...
    @property
    def password(self) -> str: ...
    @property
    def display_name(self) -> str | None: ...


@dataclass(frozen=True)
class AccountRequest:
    """A :class:`NewAccount` from plain values (the CLI, demo accounts, tests)."""

    username: str
    role: Role | str
    password: str
    display_name: str | None = None


def create_account(
    session: Session, account: NewAccount, *, created_by: repo.Actor | int | str | None = None
) -> User:
    """Create ``account`` with an argon2 hash of its password (audited by the repo).

    Raises:
        InvalidStateError: the username is taken.
        ValueError: the password is too short.
    """
    check_password_policy(account.password, username=account.username)
    if repo.get_user_by_username(session, account.username) is not None:
        raise InvalidStateError(
            f"username {account.username!r} is already taken (regardless of case)"
        )
    return repo.create_user(
        session,
        username=account.username,
        role=Role(account.role),
        password_hash=hash_password(account.password),
        display_name=account.display_name,
        created_by=created_by,
    )


def create_user(
    session: Session,
    *,
    username: str,
    role: Role | str,
    password: str,
    display_name: str | None = None,
    created_by: repo.Actor | int | str | None = None,
) -> User:
    """:func:`create_account` from keyword values."""
    account = AccountRequest(username, role, password, display_name)
    return create_account(session, account, created_by=created_by)


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
        if not is_active:
            sessions.end_all_sessions(user)
    if display_name is not None and display_name != user.display_name:
        before["display_name"], after["display_name"] = user.display_name, display_name
        user.display_name = display_name
    if password is not None:
        check_password_policy(password, username=user.username)
        user.password_hash = hash_password(password)
        sessions.end_all_sessions(user)
        after["password"] = "changed"
    if after:
        repo.audit(session, "user.update", user.id, actor=actor, before=before, after=after)
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
    ("admin", Role.ADMIN, "INSPECTION_DEMO_ADMIN_PASSWORD", "admin-demo-pass"),
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


#: :func:`create_user`, :func:`create_account` and :func:`update_user` as use cases (each
#: committed).
add_user = committed(create_user)
add_account = committed(create_account)
change_user = committed(update_user)
