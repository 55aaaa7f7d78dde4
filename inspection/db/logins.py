"""Logins: single sessions ended early (``revoked_session``) and failed logins per username and
client address (``login_failure``). The rules (how long a pair is refused, which sessions stay
valid) live in :mod:`inspection.services.sessions`.

Conventions of every data-access module: :mod:`inspection.db`.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from inspection.db.models import LoginFailure, RevokedSession, utcnow


def is_session_revoked(session: Session, sid: str) -> bool:
    """Whether the login with session id ``sid`` was ended (logout)."""
    return session.get(RevokedSession, sid) is not None


def revoke_session(session: Session, *, sid: str, user_id: int, expires_at: dt.datetime) -> None:
    """End the login ``sid`` of ``user_id`` (kept until ``expires_at``, when its signature
    expires anyway); purges revocations that have expired. Revoking twice is harmless."""
    now = utcnow()
    session.execute(delete(RevokedSession).where(RevokedSession.expires_at < now))
    if session.get(RevokedSession, sid) is None:
        session.add(RevokedSession(sid=sid, user_id=user_id, revoked_at=now, expires_at=expires_at))
    session.flush()


def login_failures(session: Session, username: str) -> list[LoginFailure]:
    """The failure records of ``username`` (lower-cased) from every client address."""
    key = username.lower()[:64]
    query = select(LoginFailure).where(LoginFailure.username == key)
    return list(session.scalars(query.execution_options(populate_existing=True)))


def save_login_failure(
    session: Session,
    *,
    username: str,
    address: str,
    failures: int,
    at: dt.datetime,
    locked_until: dt.datetime | None,
) -> None:
    """Insert or update the failure record of (``username`` lower-cased, ``address``) in one
    statement (``INSERT ... ON CONFLICT DO UPDATE``), so concurrent failures never collide."""
    values = {
        "username": username.lower()[:64],
        "address": address[:64],
        "failures": failures,
        "last_failure_at": at,
        "locked_until": locked_until,
    }
    changed = {k: values[k] for k in ("failures", "last_failure_at", "locked_until")}
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(LoginFailure).values(**values)
    session.execute(
        stmt.on_conflict_do_update(index_elements=["username", "address"], set_=changed)
    )


def clear_login_failures(session: Session, *, username: str, address: str) -> None:
    """Forget the failures of (``username``, ``address``) after a successful login."""
    session.execute(
        delete(LoginFailure).where(
            LoginFailure.username == username.lower()[:64], LoginFailure.address == address[:64]
        )
    )


def purge_login_failures(session: Session, *, before: dt.datetime) -> int:
    """Delete failure records whose newest failure is older than ``before``; how many."""
    result = session.execute(delete(LoginFailure).where(LoginFailure.last_failure_at < before))
    return int(getattr(result, "rowcount", 0) or 0)
