"""The unit of work: commit on return, roll back on error, keep chosen errors' work, nest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from inspection.db import migrate, repo
from inspection.db.engine import make_engine, make_session_factory
from inspection.db.models import AuditLog
from inspection.errors import InvalidStateError, NotFoundError
from inspection.services.uow import transaction, unit_of_work


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'uow.db'}")
    migrate.upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


def _audit(session: Session, action: str) -> None:
    repo.write_audit(session, actor="test", action=action, entity_type="test", entity_id=1)


def _count(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return int(session.scalar(select(func.count()).select_from(AuditLog)) or 0)


def _fail_in_unit(
    session: Session, error: Exception, commit_on: tuple[type[BaseException], ...] = ()
) -> None:
    with unit_of_work(session, commit_on=commit_on):
        _audit(session, "work")
        raise error


def _fail_after_inner_unit(session: Session) -> None:
    with unit_of_work(session):
        with unit_of_work(session):
            _audit(session, "inner")
        raise NotFoundError("outer fails")


def test_commits_on_return_and_rolls_back_on_error(factory: sessionmaker[Session]) -> None:
    with factory() as session:
        with unit_of_work(session):
            _audit(session, "kept")
        with pytest.raises(NotFoundError):
            _fail_in_unit(session, NotFoundError("no"))
    assert _count(factory) == 1


def test_commit_on_keeps_the_work_of_chosen_errors(factory: sessionmaker[Session]) -> None:
    with factory() as session, pytest.raises(InvalidStateError):
        _fail_in_unit(session, InvalidStateError("wrong"), commit_on=(InvalidStateError,))
    assert _count(factory) == 1


def test_inner_units_leave_the_transaction_to_the_outer_one(
    factory: sessionmaker[Session],
) -> None:
    with factory() as session, pytest.raises(NotFoundError):
        _fail_after_inner_unit(session)
    assert _count(factory) == 0
    transaction(factory, lambda s: _audit(s, "via factory"))
    assert _count(factory) == 1
