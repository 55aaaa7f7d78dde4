"""Running the review app: in the foreground (:func:`serve`) or in a background thread
(:func:`start_in_thread`, for ``inspection demo`` and the browser tests).

Example (what the demo does)::

    from inspection.api.server import start_in_thread
    from inspection.api.settings import ApiSettings

    settings = ApiSettings(database_url="sqlite:///var/demo/inspection.db",
                           artifact_root="var/demo/artifacts", auto_migrate=True)
    with start_in_thread(settings, port=8000) as running:
        print("review UI at", running.url)
        ...  # run the line; the UI serves meanwhile
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from dataclasses import dataclass
from types import TracebackType

import uvicorn
from fastapi import FastAPI

from inspection.api.app import create_app
from inspection.api.settings import ApiSettings
from inspection.db.engine import check_schema_at_head
from inspection.errors import InspectionError

log = logging.getLogger(__name__)


class ServerStartError(InspectionError):
    """The review server did not come up (port taken, start-up check failed, ...)."""


@dataclass
class RunningServer:
    """A review server running in a background thread; ``url`` is its base URL."""

    url: str
    app: FastAPI
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the server to finish its requests and stop; wait up to ``timeout_s``."""
        self.server.should_exit = True
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            log.warning("review server did not stop within %.0f s", timeout_s)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _prepare(app: FastAPI) -> None:
    """Run the start-up database checks now, so failures raise here with a clear message."""
    ctx = app.state.ctx
    if ctx.settings.auto_migrate:
        from inspection.db import migrate

        migrate.upgrade(ctx.engine)
    if ctx.settings.check_schema:
        check_schema_at_head(ctx.engine)


def start_in_thread(
    settings: ApiSettings | None = None,
    *,
    app: FastAPI | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    log_level: str = "warning",
    startup_timeout_s: float = 30.0,
) -> RunningServer:
    """Start the review app on ``host:port`` (0: a free port) in a daemon thread.

    Returns once the server accepts connections. Use as a context manager, or call
    :meth:`RunningServer.stop`.

    Raises:
        SchemaOutOfDateError: the database is not migrated (and ``auto_migrate`` is off).
        ServerStartError: the port is taken or the server did not start in time.
    """
    app = app or create_app(settings)
    _prepare(app)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServerStartError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    bound_port = int(sock.getsockname()[1])
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="inspection-review-ui", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(5)
            with contextlib.suppress(OSError):
                sock.close()
            raise ServerStartError(
                f"the review server on {host}:{bound_port} did not start (see the log above)"
            )
        time.sleep(0.02)
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{bound_port}"
    log.info("review UI listening on %s", url)
    return RunningServer(url=url, app=app, server=server, thread=thread)


def serve(
    settings: ApiSettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
) -> None:
    """Run the review app in the foreground until interrupted (Ctrl+C)."""
    app = create_app(settings)
    _prepare(app)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
