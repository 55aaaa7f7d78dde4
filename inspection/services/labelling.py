"""Labelling: an operator's verdict on an inspection, its undo, and the defect types to pick.

Labels are never changed: a new label is added (the newest is current) and an undo deletes the
operator's own newest one; both are audited on the inspection (``label.add``, ``label.undo``).
Each use case commits its own work (:func:`inspection.services.uow.unit_of_work`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, joinedload

from inspection.db import repo
from inspection.db.models import (
    DefectRegion,
    DefectType,
    Inspection,
    OperatorLabel,
    StationDefectKey,
    User,
    Verdict,
)
from inspection.errors import InvalidStateError, NotFoundError
from inspection.services.uow import unit_of_work


def defect_types(session: Session) -> list[tuple[DefectType, dict[int, int]]]:
    """Known defect types by name, each with its labelling keys ``{station_id: key}``: each
    station has its own mapping, a type keeps the key (1-9) it got at a station (the lowest
    free one there when it was created or first labelled there), so keys never move."""
    keys = repo.defect_keys(session)
    return [(t, keys.get(t.id, {})) for t in repo.list_defect_types(session)]


def _audit_created(
    session: Session, created: DefectType, actor: repo.Actor, station_id: int | None
) -> None:
    key = (
        repo.assign_defect_key(session, station_id=station_id, defect_type_id=created.id)
        if station_id is not None
        else None
    )
    repo.audit(
        session,
        "defect_type.create",
        created.id,
        actor=actor,
        after={"name": created.name, "station_id": station_id, "key": key},
    )


def create_defect_type(
    session: Session, *, name: str, actor: repo.Actor, station_id: int | None = None
) -> tuple[DefectType, dict[int, int]]:
    """Create a defect type as its own audited action (``defect_type.create``), undone by
    :func:`delete_defect_type`; committed. With ``station_id`` it takes the lowest free key
    1-9 at that station (the other types' keys never move); other stations key it when they
    first label with it. Returns the type and its keys ``{station_id: key}``.

    Raises:
        InvalidStateError: a type of that name exists.
        NotFoundError: no such station.
        ValueError: the name is empty.
    """
    with unit_of_work(session):
        clean = name.strip().lower()
        if session.scalar(select(DefectType).where(DefectType.name == clean)) is not None:
            raise InvalidStateError(f"defect type {clean!r} already exists")
        if station_id is not None:
            repo.get_station(session, station_id)
        created = repo.get_or_create_defect_type(session, clean)
        _audit_created(session, created, actor, station_id)
        return created, repo.defect_keys(session).get(created.id, {})


def delete_defect_type(session: Session, *, type_id: int, actor: repo.Actor) -> DefectType:
    """Undo the creation of a defect type no label and no region uses yet (its keys become
    free; the other types' keys stay); audited ``defect_type.delete``; committed.

    Raises:
        NotFoundError: no such type.
        InvalidStateError: labels or detected regions use it.
    """
    with unit_of_work(session):
        found = session.get(DefectType, type_id)
        if found is None:
            raise NotFoundError(f"defect type {type_id} does not exist")
        used = session.scalar(
            select(OperatorLabel.id).where(OperatorLabel.defect_type_id == type_id).limit(1)
        ) or session.scalar(
            select(DefectRegion.id).where(DefectRegion.defect_type_id == type_id).limit(1)
        )
        if used is not None:
            raise InvalidStateError(
                f"defect type {found.name!r} is in use by labels or detections; undo those first"
            )
        keys = repo.defect_keys(session).get(found.id, {})
        repo.audit(
            session,
            "defect_type.delete",
            found.id,
            actor=actor,
            before={"name": found.name, "keys": {str(k): v for k, v in keys.items()}},
        )
        session.execute(delete(StationDefectKey).where(StationDefectKey.defect_type_id == found.id))
        session.delete(found)
        return found


def _user(session: Session, user_id: int) -> User:
    found = session.get(User, user_id)
    if found is None:  # deleted between authentication and now
        raise NotFoundError(f"user {user_id} does not exist")
    return found


def _audit(
    session: Session, user: User, action: str, inspection_id: int, **change: dict[str, Any]
) -> None:
    """An audit-log row about the inspection by ``user`` (``before`` and/or ``after``)."""
    repo.write_audit(
        session,
        actor=repo.Actor(name=user.username, user_id=user.id),
        action=action,
        entity_type="inspection",
        entity_id=inspection_id,
        **change,
    )


def label_snapshot(label: OperatorLabel) -> dict[str, Any]:
    """A JSON-serialisable description of a label, for the audit log."""
    return {
        "label_id": label.id,
        "user_id": label.user_id,
        "verdict": label.verdict.value,
        "defect_type": label.defect_type.name if label.defect_type is not None else None,
        "note": label.note,
    }


def add_label(
    session: Session,
    *,
    inspection_id: int,
    user_id: int,
    verdict: Verdict,
    defect_type: str | None,
    note: str | None,
) -> OperatorLabel:
    """Label an inspection ``pass`` or ``fail`` (with a defect type; a new name creates the
    type, audited on its own as ``defect_type.create``) and audit it (``label.add``); committed.

    Raises:
        NotFoundError: no such inspection or user.
    """
    with unit_of_work(session):
        user = _user(session, user_id)
        actor = repo.Actor(name=user.username, user_id=user.id)
        new_type = defect_type is not None and (
            session.scalar(
                select(DefectType.id).where(DefectType.name == defect_type.strip().lower())
            )
            is None
        )
        label = repo.add_label(
            session,
            inspection_id=inspection_id,
            user_id=user.id,
            verdict=verdict,
            defect_type=defect_type,
            note=note,
        )
        session.refresh(label, ["defect_type"])
        if new_type and label.defect_type is not None:
            station_id = session.get(Inspection, inspection_id).station_id  # type: ignore[union-attr]
            _audit_created(session, label.defect_type, actor, station_id)
        _audit(session, user, "label.add", inspection_id, after=label_snapshot(label))
        return label


def undo_label(session: Session, *, inspection_id: int, user_id: int) -> dict[str, Any]:
    """Remove the user's newest label of the inspection (the operator's undo) and audit it;
    committed. Returns what was undone.

    The inspection returns to the review queue; the audit log keeps what was undone
    (``label.undo``, ``before``).

    Raises:
        NotFoundError: the inspection or user does not exist, or the user has no label on it.
    """
    with unit_of_work(session):
        user = _user(session, user_id)
        label = session.scalar(
            select(OperatorLabel)
            .where(OperatorLabel.inspection_id == inspection_id, OperatorLabel.user_id == user.id)
            .order_by(OperatorLabel.id.desc())
            .limit(1)
            .options(joinedload(OperatorLabel.defect_type))
        )
        if label is None:
            if session.get(Inspection, inspection_id) is None:
                raise NotFoundError(f"inspection {inspection_id} does not exist")
            raise NotFoundError(f"you have no label on inspection {inspection_id} to undo")
        snapshot = label_snapshot(label)
        session.delete(label)
        _audit(session, user, "label.undo", inspection_id, before=snapshot)
        return snapshot
