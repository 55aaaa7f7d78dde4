"""Test helpers: a throwaway PostgreSQL cluster and fresh databases in it.

:func:`start_temporary_postgres` runs Debian's server binaries
(``/usr/lib/postgresql/<version>/bin/initdb`` and ``pg_ctl``) on a free localhost port in a
temporary folder, with a random password, and removes everything on exit. PostgreSQL refuses to
run as root, so under root the server runs as the ``postgres`` system user (created by the
Debian package) in a folder that user owns. Used by ``tests/db/conftest.py`` and by
``inspection bench db``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import URL, create_engine, text

from inspection.errors import PostgresUnavailableError

log = logging.getLogger(__name__)

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
_SUPERUSER = "postgres"


def find_postgres_bindir() -> Path | None:
    """The newest installed server ``bin`` folder holding ``initdb`` and ``pg_ctl``, or None."""
    candidates: list[Path] = []
    for initdb in Path("/").glob(PG_BIN_GLOB.lstrip("/") + "/initdb"):
        if (initdb.parent / "pg_ctl").exists():
            candidates.append(initdb.parent)
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        candidates.append(Path(on_path).parent)

    def version(path: Path) -> int:
        match = re.search(r"postgresql/(\d+)", str(path))
        return int(match.group(1)) if match else 0

    return max(candidates, key=version) if candidates else None


def postgres_unavailable_reason() -> str | None:
    """Why a temporary cluster cannot be started here (for ``pytest.skip``), or None."""
    if find_postgres_bindir() is None:
        return (
            f"PostgreSQL server binaries not found ({PG_BIN_GLOB}/initdb); install the Debian "
            "package 'postgresql' (`make system-deps`) to run the PostgreSQL tests"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(_SUPERUSER)
        except KeyError:
            return (
                "running as root and there is no 'postgres' system user to run the PostgreSQL "
                "server as (PostgreSQL refuses to run as root)"
            )
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class _RunAs:
    """Who runs the server: the current user, or (under root) the ``postgres`` system user."""

    user: str | None
    uid: int
    gid: int

    @classmethod
    def detect(cls) -> _RunAs:
        if os.geteuid() != 0:
            return cls(user=None, uid=os.geteuid(), gid=os.getegid())
        entry = pwd.getpwnam(_SUPERUSER)
        return cls(user=_SUPERUSER, uid=entry.pw_uid, gid=entry.pw_gid)

    def run(self, args: list[str], *, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run a server binary as this user (no shell; output captured)."""
        if self.user is None:
            return subprocess.run(
                args, capture_output=True, text=True, timeout=timeout, check=False, cwd="/"
            )
        return subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd="/",
            user=self.uid,
            group=self.gid,
            extra_groups=[],
        )


@contextlib.contextmanager
def start_temporary_postgres(
    tmpdir: str | os.PathLike[str],
    *,
    durable: bool = False,
    database: str = "inspection",
) -> Iterator[str]:
    """Start a throwaway PostgreSQL server; yield a ``postgresql+psycopg://`` URL to it.

    ``tmpdir`` holds the cluster (under root, a private folder owned by ``postgres`` is made
    instead, because pytest's temporary folders are not readable by other users).
    ``durable=False`` turns off fsync for speed (tests); benchmarks pass ``durable=True``.
    The URL points at database ``database`` (created empty); the server listens on 127.0.0.1
    only, with no Unix socket, and password (scram) authentication.

    Raises:
        PostgresUnavailableError: no server binaries, no user to run them, or start failure
            (the message includes the server log).
    """
    reason = postgres_unavailable_reason()
    bindir = find_postgres_bindir()
    if reason is not None or bindir is None:
        raise PostgresUnavailableError(reason or "PostgreSQL binaries not found")
    runner = _RunAs.detect()
    base = Path(tmpdir)
    own_base = runner.user is not None
    if own_base:
        base = Path(tempfile.mkdtemp(prefix="inspection-pg-"))
        os.chown(base, runner.uid, runner.gid)
    else:
        base.mkdir(parents=True, exist_ok=True)
    datadir = base / "data"
    logfile = base / "server.log"
    pwfile = base / "pwfile"
    password = secrets.token_urlsafe(18)
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    if runner.user is not None:
        os.chown(pwfile, runner.uid, runner.gid)
    started = False
    try:
        _initdb(runner, bindir, datadir, pwfile)
        port = _pg_start(runner, bindir, datadir, logfile, durable)
        started = True
        admin_url = URL.create(
            "postgresql+psycopg",
            username=_SUPERUSER,
            password=password,
            host="127.0.0.1",
            port=port,
            database="postgres",
        )
        create_database(admin_url, database)
        log.info("temporary PostgreSQL on 127.0.0.1:%d (%s)", port, datadir)
        yield admin_url.set(database=database).render_as_string(hide_password=False)
    finally:
        if started:
            runner.run([str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"])
        if own_base:
            shutil.rmtree(base, ignore_errors=True)
        else:
            shutil.rmtree(datadir, ignore_errors=True)
            pwfile.unlink(missing_ok=True)


def _initdb(runner: _RunAs, bindir: Path, datadir: Path, pwfile: Path) -> None:
    """A new cluster in ``datadir`` whose superuser's password is in ``pwfile``."""
    result = runner.run(
        [
            str(bindir / "initdb"),
            "-D",
            str(datadir),
            "-U",
            _SUPERUSER,
            "--pwfile",
            str(pwfile),
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        ]
    )
    if result.returncode != 0:
        raise PostgresUnavailableError(f"initdb failed: {result.stderr.strip()[-2000:]}")


def _pg_start(runner: _RunAs, bindir: Path, datadir: Path, logfile: Path, durable: bool) -> int:
    """Start the cluster on a free 127.0.0.1 port (three tries); the port.

    Raises:
        PostgresUnavailableError: it did not start (with the server log's end).
    """
    settings = [
        "-c listen_addresses=127.0.0.1",
        "-c unix_socket_directories=''",
        "-c max_connections=50",
    ]
    if not durable:
        settings += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
    for _attempt in range(3):
        port = _free_port()
        result = runner.run(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(datadir),
                "-l",
                str(logfile),
                "-w",
                "-t",
                "60",
                "-o",
                " ".join([f"-p {port}", *settings]),
                "start",
            ]
        )
        if result.returncode == 0:
            return port
    server_log = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
    raise PostgresUnavailableError(
        f"pg_ctl start failed: {result.stderr.strip()[-1000:]}\n{server_log}"
    )


def _on_server(url: str | URL, name: str, statement: str) -> URL:
    """Run ``statement`` (``{name}``: the database ``name``, checked to be a plain identifier)
    in the server's ``postgres`` database; the server's URL."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"unsafe database name {name!r}")
    from sqlalchemy.engine import make_url

    server = make_url(url)
    engine = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(statement.format(name=name)))
    finally:
        engine.dispose()
    return server


def create_database(url: str | URL, name: str) -> str:
    """Create an empty database ``name`` on the server of ``url``; return a URL to it."""
    server = _on_server(url, name, 'CREATE DATABASE "{name}"')
    return server.set(database=name).render_as_string(hide_password=False)


def drop_database(url: str | URL, name: str) -> None:
    """Drop database ``name`` (closing its other connections first)."""
    _on_server(url, name, 'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
