"""Engine factory: SQLite pragmas and BEGIN IMMEDIATE, URL handling, transient retries."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from inspection.db.engine import (
    is_transient,
    make_engine,
    make_session_factory,
    normalize_url,
    retry_transient,
    run_in_transaction,
)
from inspection.db.settings import DEFAULT_DATABASE_URL, get_settings, mask_url
from inspection.errors import DatabaseError


def test_sqlite_pragmas_and_parent_dir(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "x.db"
    engine = make_engine(f"sqlite:///{path}", busy_timeout_s=12.5)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 12500
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert path.exists()
    finally:
        engine.dispose()


def test_sqlite_transactions_begin_immediate(tmp_path: Path) -> None:
    """A writer takes the write lock at BEGIN; a second writer waits (here: times out) at
    BEGIN, never half-way through its transaction. Read-only sessions still read."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    holder = make_engine(url)
    other = make_engine(url, busy_timeout_s=0.05)
    try:
        with holder.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
        with holder.begin() as conn:
            conn.execute(text("SELECT 1"))  # no write yet: the lock is already held
            with pytest.raises(OperationalError, match="locked"), other.begin() as conn2:
                conn2.execute(text("SELECT 1"))
            reader = make_session_factory(other, read_only=True)
            with reader() as session:
                assert session.execute(text("SELECT count(*) FROM t")).scalar() == 0
    finally:
        holder.dispose()
        other.dispose()


def test_sqlite_rollback_really_rolls_back(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))

        def insert_then_fail() -> None:
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO t VALUES (1)"))
                raise RuntimeError("abort")

        with pytest.raises(RuntimeError):
            insert_then_fail()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 0
    finally:
        engine.dispose()


def test_in_memory_sqlite_works() -> None:
    engine = make_engine("sqlite://")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()


def test_url_normalisation_and_masking() -> None:
    assert normalize_url("postgresql://u:p@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"
    masked = mask_url("postgresql+psycopg://user:top%40secret@db.plant:5432/insp")
    assert "secret" not in masked
    assert masked == "postgresql+psycopg://user:***@db.plant:5432/insp"
    assert mask_url("not a url") == "<unparseable database URL>"


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INSPECTION_DATABASE_URL", raising=False)
    assert get_settings().database_url == DEFAULT_DATABASE_URL
    monkeypatch.setenv("INSPECTION_DATABASE_URL", "sqlite:///elsewhere.db")
    assert get_settings().database_url == "sqlite:///elsewhere.db"


def _operational(message: str) -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception(message))


def test_retry_transient_recovers() -> None:
    calls: list[int] = []
    sleeps: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise _operational("server closed the connection unexpectedly")
        return "ok"

    assert retry_transient(flaky, attempts=5, sleep=sleeps.append) == "ok"
    assert len(calls) == 3
    assert len(sleeps) == 2
    assert sleeps[1] > 0


def test_retry_transient_gives_up_with_clear_error() -> None:
    def down() -> None:
        raise _operational("connection refused")

    with pytest.raises(DatabaseError, match=r"after 3 attempts.*INSPECTION_DATABASE_URL"):
        retry_transient(down, attempts=3, sleep=lambda _s: None)


def test_retry_does_not_retry_integrity_errors() -> None:
    calls: list[int] = []

    def bad() -> None:
        calls.append(1)
        raise IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed"))

    with pytest.raises(IntegrityError):
        retry_transient(bad, attempts=5, sleep=lambda _s: None)
    assert calls == [1]
    assert not is_transient(IntegrityError("x", {}, Exception("y")))


def test_run_in_transaction_commits(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
        factory = make_session_factory(engine)
        run_in_transaction(factory, lambda s: s.execute(text("INSERT INTO t VALUES (7)")))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT x FROM t")).scalar() == 7
    finally:
        engine.dispose()
