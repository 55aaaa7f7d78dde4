"""What every data-access module shares: the audit log and who made a change, lookups
that raise :class:`~inspection.errors.NotFoundError`, argument checks, table counts.

Conventions of every data-access module: :mod:`inspection.db`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from inspection.db.models import (
    AuditLog,
    Base,
    User,
    utcnow,
)
from inspection.errors import NotFoundError

M = TypeVar("M", bound=Base)


class _HasId(Protocol):
    """A row with an integer primary key ``id`` (every audited table)."""

    @property
    def id(self) -> int: ...


R = TypeVar("R", bound=_HasId)


@dataclass(frozen=True)
class Actor:
    """Who made a change, for the audit log: a user, or a named system component."""

    name: str
    user_id: int | None = None


# -- helpers -----------------------------------------------------------------------------------


def get_existing(session: Session, model: type[M], ident: int, what: str) -> M:
    """The row of ``model`` with primary key ``ident``; :class:`NotFoundError` naming ``what``
    when there is none."""
    obj = session.get(model, ident)
    if obj is None:
        raise NotFoundError(f"{what} {ident} does not exist")
    return obj


def _resolve_actor(session: Session, changed_by: int | str | Actor | None) -> Actor:
    """``changed_by``: a user id, a system actor name (``"station:s1"``), or an :class:`Actor`."""
    if changed_by is None:
        return Actor(name="system")
    if isinstance(changed_by, Actor):
        return changed_by
    if isinstance(changed_by, str):
        return Actor(name=changed_by)
    user = get_existing(session, User, changed_by, "user")
    return Actor(name=user.username, user_id=user.id)


def write_audit(
    session: Session,
    *,
    actor: int | str | Actor | None,
    action: str,
    entity_type: str,
    entity_id: int | str,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> AuditLog:
    """Append one audit-log row (``before``/``after`` must be JSON-serialisable)."""
    who = _resolve_actor(session, actor)
    row = AuditLog(
        at=utcnow(),
        user_id=who.user_id,
        actor=who.name,
        action=action,
        entity_type=entity_type,
        entity_id=str(entity_id),
        before=dict(before) if before is not None else None,
        after=dict(after) if after is not None else None,
    )
    session.add(row)
    return row


def audit(
    session: Session,
    action: str,
    entity_id: int | str,
    *,
    actor: int | str | Actor | None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> AuditLog:
    """:func:`write_audit` for an action named ``<entity type>.<verb>``
    (``station.set_thresholds``): the entity type is the part before the dot."""
    entity_type, _, _ = action.partition(".")
    return write_audit(
        session,
        actor=actor,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        before=before,
        after=after,
    )


def add_audited(
    session: Session,
    row: R,
    action: str,
    *,
    actor: int | str | Actor | None,
    after: Mapping[str, Any],
) -> R:
    """Insert ``row``, flush it so that it has its id, and audit its creation as ``action``
    (see :func:`audit`)."""
    session.add(row)
    session.flush()
    audit(session, action, row.id, actor=actor, after=after)
    return row


def require_aware(value: dt.datetime, name: str) -> dt.datetime:
    """``value`` unchanged; ``ValueError`` naming argument ``name`` when it has no time zone."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value!r}")
    return value


def check_limit(limit: int) -> int:
    """A page size ``limit`` unchanged; ``ValueError`` outside 1..1000."""
    if not 1 <= limit <= 1000:
        raise ValueError(f"limit must be in 1..1000, got {limit}")
    return limit


def table_counts(session: Session) -> dict[str, int]:
    """Row count of every table (for diagnostics and tests)."""
    counts: dict[str, int] = {}
    for table in Base.metadata.sorted_tables:
        counts[table.name] = int(session.scalar(select(func.count()).select_from(table)) or 0)
    return counts
