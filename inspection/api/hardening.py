"""HTTP-layer protections of the review app, as pure ASGI middleware (they run before routing,
authentication and body parsing, so they also hold for anonymous requests):

* :class:`BodyLimit`: request bodies are bounded **before** they are parsed. A declared
  ``Content-Length`` above the route kind's limit is answered 413 without reading a byte;
  bodies without one (chunked) are counted as they stream in and cut off with 413 at the limit.
  Limits (:class:`BodyLimits`, settable through :class:`~inspection.api.settings.ApiSettings`):
  login and token requests 16 KiB, the JSON API 1 MiB, HTML forms (including
  ``multipart/form-data``) 256 KiB. No route takes uploads.
* :class:`OriginCheck`: state-changing requests (POST, PUT, PATCH, DELETE) whose ``Origin``
  header names another site (or ``null``) are refused with 403, whatever they authenticate
  with. Requests without an ``Origin`` (scripts, curl) pass; browsers always send it on
  cross-site writes. Behind a proxy that rewrites ``Host``, list the public origin in
  ``INSPECTION_API_TRUSTED_ORIGINS``.
* :func:`secure_cookie`: with ``cookie_secure`` on, every ``Set-Cookie`` of every response
  gets the ``Secure`` attribute (session, login CSRF, flash, deletions), so none leaks over
  plain HTTP (applied by the app's security-headers middleware).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

KIB = 1024
MIB = 1024 * KIB

#: Paths that take credentials (anonymous by nature): the smallest limit.
AUTH_PATHS = frozenset({"/login", "/logout", "/api/auth/token"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class BodyLimits:
    """Largest request body accepted per route kind, bytes."""

    auth: int = 16 * KIB
    api: int = 1 * MIB
    form: int = 256 * KIB

    def for_path(self, path: str) -> tuple[str, int]:
        """The route kind of ``path`` and its limit."""
        if path in AUTH_PATHS:
            return "auth", self.auth
        if path.startswith("/api/"):
            return "api", self.api
        return "form", self.form


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


class HttpMiddleware:
    """A pure ASGI middleware that acts on HTTP requests (:meth:`http`); everything else
    (lifespan, websockets) passes straight to the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class BodyLimit(HttpMiddleware):
    """413 for request bodies above the route kind's limit, checked before anything reads them."""

    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        super().__init__(app)
        self.limits = limits

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind, limit = self.limits.for_path(scope["path"])
        detail = f"request body too large: at most {limit} bytes for {kind} requests"
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _send_json(send, 400, "invalid Content-Length")
                return
            if size > limit:
                log.info("refused a %d-byte body to %s (limit %d)", size, scope["path"], limit)
                await _send_json(send, 413, detail)
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    log.info("cut off a streamed body to %s at %d bytes", scope["path"], limit)
                    # FastAPI re-raises HTTPExceptions from body reading: the app's handler
                    # answers 413 (JSON for the API, an error page for browsers).
                    raise HTTPException(413, detail)
            return message

        await self.app(scope, counted, send)


def _origin_of(value: str) -> str | None:
    parts = urlsplit(value)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


class OriginCheck(HttpMiddleware):
    """403 for state-changing requests from another site's pages (``Origin`` not ours)."""

    def __init__(self, app: ASGIApp, trusted_origins: Iterable[str] = ()) -> None:
        super().__init__(app)
        self.trusted = {o for o in (_origin_of(t) for t in trusted_origins) if o is not None}

    def _allowed(self, scope: Scope, origin: str) -> bool:
        parsed = _origin_of(origin)
        if parsed is None:  # "null" (sandboxed frames, file: pages) or garbage
            return False
        if parsed in self.trusted:
            return True
        host = (_header(scope, b"host") or "").lower()
        return bool(host) and urlsplit(parsed).netloc == host

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] in UNSAFE_METHODS:
            origin = _header(scope, b"origin")
            if origin is not None and not self._allowed(scope, origin):
                log.warning(
                    "refused a %s to %s from origin %r", scope["method"], scope["path"], origin
                )
                await _send_json(
                    send, 403, "cross-site request refused: the Origin is not this site"
                )
                return
        await self.app(scope, receive, send)


def secure_cookie(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    """A response header, with ``Secure`` added when it is a ``Set-Cookie`` without it (used by
    :class:`inspection.api.app.SecurityHeaders` when ``cookie_secure`` is on)."""
    if name.lower() != b"set-cookie":
        return name, value
    if b"secure" in {part.strip().lower() for part in value.split(b";")}:
        return name, value
    return name, value + b"; Secure"
