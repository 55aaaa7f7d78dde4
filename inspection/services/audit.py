"""The audit log as people read it: newest first, filtered, paged by id."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from inspection.db.models import AuditLog


def audit_page(
    session: Session,
    *,
    limit: int,
    before_id: int | None = None,
    entity_type: str | None = None,
    actor: str | None = None,
) -> list[AuditLog]:
    """Audit-log rows newest first; page with ``before_id`` (the last id of the previous page)."""
    stmt = select(AuditLog).order_by(AuditLog.id.desc()).limit(limit)
    if before_id is not None:
        stmt = stmt.where(AuditLog.id < before_id)
    if entity_type is not None:
        stmt = stmt.where(AuditLog.entity_type == entity_type)
    if actor is not None:
        stmt = stmt.where(AuditLog.actor == actor)
    return list(session.scalars(stmt))
