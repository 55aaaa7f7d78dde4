"""User accounts.

Conventions of every data-access module: :mod:`inspection.db`.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from inspection.db.common import Actor, add_audited
from inspection.db.models import (
    Role,
    User,
    utcnow,
)


def create_user(
    session: Session,
    *,
    username: str,
    role: Role | str,
    password_hash: str | None = None,
    display_name: str | None = None,
    created_by: int | str | Actor | None = None,
) -> User:
    """Create a user (``password_hash`` from :func:`inspection.db.security.hash_password`)."""
    user = User(
        username=username,
        role=Role(role),
        password_hash=password_hash,
        display_name=display_name,
        is_active=True,
        created_at=utcnow(),
    )
    return add_audited(
        session,
        user,
        "user.create",
        actor=created_by,
        after={"username": username, "role": user.role.value},
    )


def get_user_by_username(session: Session, username: str) -> User | None:
    """The user called ``username`` regardless of case ("OP1" finds "op1"), or None.

    Usernames are unique regardless of case (index ``uq_users_username_lower``), so there is at
    most one; the lookup uses that index.
    """
    return session.scalar(select(User).where(func.lower(User.username) == username.lower()))
