"""Engine and session factories, transient-error retries and the schema-at-head check.

SQLite (the embedded default) is configured for several writer processes sharing one file:
WAL journal, ``foreign_keys=ON``, ``busy_timeout`` and ``synchronous=NORMAL``; and every
transaction starts with ``BEGIN IMMEDIATE``, so a writer takes the write lock up front and waits
(up to the busy timeout) instead of starting as a reader and failing with "database is locked"
when it later tries to upgrade to a writer. Read-only sessions may opt into plain deferred
``BEGIN`` via :func:`make_session_factory` ``(read_only=True)``.

PostgreSQL (plants) uses psycopg 3; ``postgresql://`` URLs are mapped to ``postgresql+psycopg``.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from inspection.db.settings import mask_url
from inspection.errors import DatabaseError, SchemaOutOfDateError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Execution option selecting how SQLite transactions begin: "IMMEDIATE" (default) or "DEFERRED".
SQLITE_BEGIN_OPTION = "sqlite_begin"
DEFAULT_BUSY_TIMEOUT_S = 30.0


def normalize_url(url: str | URL) -> URL:
    """Parse ``url``; plain ``postgresql://`` means psycopg 3 (the driver this package ships)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite URL, or ``None`` for in-memory databases."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def make_engine(
    url: str | URL,
    *,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    echo: bool = False,
    **kwargs: Any,
) -> Engine:
    """Create an :class:`~sqlalchemy.Engine` for ``url`` with this package's settings.

    SQLite: creates the file's parent folder, turns on WAL, foreign keys, ``busy_timeout``
    (``busy_timeout_s`` seconds) and ``synchronous=NORMAL`` on every connection, and begins
    transactions with ``BEGIN IMMEDIATE``. PostgreSQL: ``pool_pre_ping`` so a restarted server
    costs one reconnect, not an error. Extra ``kwargs`` go to :func:`sqlalchemy.create_engine`.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _make_sqlite_engine(parsed, busy_timeout_s=busy_timeout_s, echo=echo, **kwargs)
    kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(parsed, echo=echo, **kwargs)
    log.debug("database engine for %s", mask_url(parsed.render_as_string(hide_password=False)))
    return engine


def _make_sqlite_engine(url: URL, *, busy_timeout_s: float, echo: bool, **kwargs: Any) -> Engine:
    path = _sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    connect_args = dict(kwargs.pop("connect_args", {}))
    connect_args.setdefault("timeout", busy_timeout_s)
    engine = create_engine(url, echo=echo, connect_args=connect_args, **kwargs)
    busy_ms = int(busy_timeout_s * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy (the "begin" hook below) issue BEGIN, not the sqlite3 module, which
        # would begin lazily and deferred.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if path is not None:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "IMMEDIATE")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if mode == "IMMEDIATE" else "BEGIN")

    log.debug("sqlite engine for %s (WAL, busy_timeout=%d ms)", path or ":memory:", busy_ms)
    return engine


def make_session_factory(engine: Engine, *, read_only: bool = False) -> sessionmaker[Session]:
    """Session factory bound to ``engine``; objects stay readable after commit.

    ``read_only=True`` begins SQLite transactions as deferred, so readers never wait for the
    write lock; such sessions must not write (a later write may fail with "database is locked").
    """
    bind = engine.execution_options(**{SQLITE_BEGIN_OPTION: "DEFERRED"}) if read_only else engine
    return sessionmaker(bind=bind, expire_on_commit=False)


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: lost connections, server restarts, SQLite busy/locked."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError)


def retry_transient(
    fn: Callable[[], T],
    *,
    attempts: int = 5,
    base_delay_s: float = 0.2,
    max_delay_s: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    what: str = "database operation",
) -> T:
    """Call ``fn`` until it succeeds, retrying transient database errors with backoff.

    Waits ``base_delay_s * 2**k`` (capped at ``max_delay_s``, with jitter) between tries.
    ``fn`` must be safe to repeat: run a whole transaction in it, not half of one.
    Non-transient errors (integrity, programming errors) propagate at once.

    Raises:
        DatabaseError: the last of ``attempts`` tries still failed transiently.
    """
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except DBAPIError as exc:
            if not is_transient(exc):
                raise
            if attempt == attempts:
                raise DatabaseError(
                    f"{what} failed after {attempts} attempts because the database is "
                    f"unavailable or busy ({type(exc.orig).__name__}: {_first_line(exc.orig)}); "
                    "check that the database server is running and INSPECTION_DATABASE_URL "
                    "points to it"
                ) from exc
            delay = min(max_delay_s, base_delay_s * 2 ** (attempt - 1))
            delay *= 0.5 + random.random()  # jitter, not cryptography
            log.warning(
                "%s: transient database error (attempt %d/%d), retrying in %.2f s: %s",
                what,
                attempt,
                attempts,
                delay,
                _first_line(exc.orig),
            )
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def run_in_transaction(
    factory: sessionmaker[Session],
    fn: Callable[[Session], T],
    *,
    attempts: int = 5,
    what: str = "database transaction",
) -> T:
    """Run ``fn(session)`` in its own transaction, committed on return, retried when transient.

    The usual way for stations and jobs to write: ``run_in_transaction(factory,
    lambda s: repo.record_inspection(s, item))``.
    """

    def once() -> T:
        with factory() as session, session.begin():
            return fn(session)

    return retry_transient(once, attempts=attempts, what=what)


def _first_line(exc: BaseException | None) -> str:
    text = str(exc) if exc is not None else ""
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def check_schema_at_head(engine: Engine) -> str:
    """Make sure the database schema is at the newest Alembic revision; return that revision.

    The app and stations call this at start-up and refuse to run otherwise.

    Raises:
        SchemaOutOfDateError: the database is empty, behind, or ahead of this code, with the
            command that fixes it.
    """
    from inspection.db.migrate import current_revision, head_revision

    head = head_revision()
    current = current_revision(engine)
    if current == head:
        return head
    where = mask_url(engine.url.render_as_string(hide_password=False))
    upgrade = (
        "upgrade it with `inspection db upgrade` (INSPECTION_DATABASE_URL set to this "
        "database, or `--url`)"
    )
    if current is None:
        msg = f"database {where} has no schema (expected revision {head}); {upgrade}"
    elif _is_known_revision(current):
        msg = f"database {where} is at revision {current}, this code needs {head}; {upgrade}"
    else:
        msg = (
            f"database {where} is at revision {current}, which this code does not know "
            f"(newest known: {head}); the database was upgraded by a newer version of "
            "inspection: upgrade the software, or downgrade the database with that newer version"
        )
    raise SchemaOutOfDateError(msg)


def _is_known_revision(revision: str) -> bool:
    from inspection.db.migrate import known_revisions

    return revision in known_revisions()
