"""The unit of work: how every use case in :mod:`inspection.services` owns its transaction.

A use case that changes data runs its body inside :func:`unit_of_work` on the session its
caller opened (a web request's session, a job's session): the block's work is committed when it
returns and rolled back when it raises, so a route never commits and never half-commits.
Callers that hold a session factory instead (the retraining loop, a station's bootstrap, the
benchmarks) use :func:`transaction`, which opens the session, retries transient database errors
and commits the same way.

Units of work nest: one opened inside another (a use case calling another use case's step)
neither commits nor rolls back; the outermost one owns the transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from inspection.db.engine import run_in_transaction

T = TypeVar("T")
P = ParamSpec("P")

_DEPTH = "inspection.uow_depth"


@contextmanager
def unit_of_work(
    session: Session, *, commit_on: tuple[type[BaseException], ...] = ()
) -> Iterator[Session]:
    """Commit ``session`` when the block returns, roll it back when the block raises.

    ``commit_on``: exceptions whose work is committed before they propagate (a failed login
    keeps its ``user.login_failed`` audit row). Nested inside another unit of work on the same
    session, the block only runs: the outer one decides.
    """
    depth = session.info.get(_DEPTH, 0)
    session.info[_DEPTH] = depth + 1
    try:
        yield session
    except commit_on:
        if depth == 0:
            session.commit()
        raise
    except BaseException:
        if depth == 0:
            session.rollback()
        raise
    else:
        if depth == 0:
            session.commit()
    finally:
        session.info[_DEPTH] = depth


def transaction(
    factory: sessionmaker[Session], fn: Callable[[Session], T], *, what: str = "use case"
) -> T:
    """Run ``fn`` in a new session's unit of work, retried on transient database errors."""

    def once(session: Session) -> T:
        # run_in_transaction's ``session.begin()`` commits; units of work inside ``fn`` nest
        session.info[_DEPTH] = 1
        return fn(session)

    return run_in_transaction(factory, once, what=what)


def committed(step: Callable[Concatenate[Session, P], T]) -> Callable[Concatenate[Session, P], T]:
    """The use case that runs ``step`` (a function that does not commit: a building block
    other use cases and jobs combine) as one unit of work on the caller's session."""

    @functools.wraps(step)
    def use_case(session: Session, /, *args: P.args, **kwargs: P.kwargs) -> T:
        with unit_of_work(session):
            return step(session, *args, **kwargs)

    use_case.__doc__ = f"{step.__doc__ or ''}\n\nCommitted as one unit of work."
    return use_case
