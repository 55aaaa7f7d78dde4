"""Request dependencies: the app context, database sessions, the current user and role checks.

Everything a route needs is injected with ``Depends``; the objects themselves (engine, session
factories, artifact store, signer) are built once by :func:`inspection.api.app.create_app` and
kept in :class:`AppContext` on ``app.state.ctx``.

Sessions: GET routes use :func:`read_session` (SQLite: deferred ``BEGIN``, never waits for the
write lock); routes that change data use :func:`write_session` and pass it to one use case of
:mod:`inspection.services`, which commits it (or rolls it back) through its unit of work.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from inspection.api.auth import (
    CSRF_FORM_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    Claims,
    TokenSigner,
    csrf_matches,
    role_allows,
)
from inspection.api.errors import AuthenticationRequiredError, CsrfError, PermissionDeniedError
from inspection.api.images import ImageService
from inspection.api.settings import ApiSettings
from inspection.db import repo
from inspection.db.models import Role, utcnow
from inspection.services import sessions
from inspection.services.sessions import LoginThrottle
from inspection.storage import ArtifactStore

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class AppContext:
    """The long-lived objects of one app instance."""

    settings: ApiSettings
    engine: Engine
    write_sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]
    store: ArtifactStore
    images: ImageService
    signer: TokenSigner
    throttle: LoginThrottle
    templates: Jinja2Templates


@dataclass(frozen=True)
class CurrentUser:
    """The authenticated user of a request (a detached snapshot, safe across sessions).

    ``via`` is ``"cookie"`` (browser session, has ``csrf``) or ``"token"`` (bearer token);
    ``sid`` is the login's session id (what logout revokes).
    """

    id: int
    username: str
    display_name: str | None
    role: Role
    via: str
    sid: str = ""
    csrf: str | None = None

    def allows(self, role: Role) -> bool:
        """Whether this user's role admits what ``role`` is needed for."""
        return role_allows(self.role, role)

    @property
    def label(self) -> str:
        """Name to show in the UI."""
        return self.display_name or self.username


def client_address(request: Request) -> str:
    """The client's address (the peer, or the address a trusted proxy forwarded, as uvicorn's
    ``--forwarded-allow-ips`` decides); what failed logins are counted per."""
    return request.client.host if request.client is not None else "unknown"


def get_ctx(request: Request) -> AppContext:
    """The app context built by ``create_app``."""
    ctx: AppContext = request.app.state.ctx
    return ctx


Ctx = Annotated[AppContext, Depends(get_ctx)]


def read_session(ctx: Ctx) -> Iterator[Session]:
    """A session for reading (closed after the request; never commits)."""
    with ctx.read_sessions() as session:
        yield session


def write_session(ctx: Ctx) -> Iterator[Session]:
    """A session for changes; the route commits. Uncommitted work is rolled back on close."""
    with ctx.write_sessions() as session:
        yield session


ReadSession = Annotated[Session, Depends(read_session)]
WriteSession = Annotated[Session, Depends(write_session)]


def _claims(request: Request, ctx: AppContext) -> tuple[Claims, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() == "bearer" and credential.strip():
        claims = ctx.signer.read_token(credential.strip())
        return (claims, "token") if claims is not None else None
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        claims = ctx.signer.read_session(cookie)
        return (claims, "cookie") if claims is not None else None
    return None


def _load_user(ctx: AppContext, claims: Claims, via: str) -> CurrentUser | None:
    with ctx.read_sessions() as session:
        user = sessions.session_user(
            session,
            user_id=claims.user_id,
            fingerprint=claims.fingerprint,
            generation=claims.generation,
            sid=claims.sid,
        )
        if user is None:
            return None
        return CurrentUser(
            id=user.id,
            username=user.username,
            display_name=user.display_name,
            role=user.role,
            via=via,
            sid=claims.sid,
            csrf=claims.csrf,
        )


async def optional_user(request: Request, ctx: Ctx) -> CurrentUser | None:
    """The logged-in user, or None for anonymous requests (login page, static files)."""
    found = _claims(request, ctx)
    if found is None:
        return None
    claims, via = found
    return await run_in_threadpool(_load_user, ctx, claims, via)


async def current_user(
    request: Request, user: Annotated[CurrentUser | None, Depends(optional_user)]
) -> CurrentUser:
    """The logged-in user; state changes through a cookie session must carry the CSRF token.

    Raises:
        AuthenticationRequiredError: no valid session or token (401, or a redirect to the login
            page for browsers).
        CsrfError: a cookie-authenticated POST/PUT/PATCH/DELETE without the right token (403).
    """
    if user is None:
        raise AuthenticationRequiredError("log in first: no valid session cookie or bearer token")
    if user.via == "cookie" and request.method not in SAFE_METHODS:
        given = request.headers.get(CSRF_HEADER)
        if given is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        ):
            form = await request.form()
            value = form.get(CSRF_FORM_FIELD)
            given = value if isinstance(value, str) else None
        if not csrf_matches(user.csrf, given):
            raise CsrfError(
                f"missing or wrong CSRF token: send the {CSRF_HEADER} header (or the "
                f"{CSRF_FORM_FIELD} form field) from the page you are on, or reload it"
            )
    return user


def end_login(ctx: AppContext, session: Session, user: CurrentUser) -> None:
    """Revoke the login that authenticated this request (cookie or token) on the server."""
    max_age = ctx.signer.token_max_age_s if user.via == "token" else ctx.signer.session_max_age_s
    sessions.logout(
        session,
        actor=repo.Actor(name=user.username, user_id=user.id),
        sid=user.sid,
        expires_at=utcnow() + dt.timedelta(seconds=max_age),
    )


def require(role: Role) -> Callable[..., CurrentUser]:
    """A dependency admitting users whose role is ``role`` or higher (403 otherwise)."""

    def check(user: Annotated[CurrentUser, Depends(current_user)]) -> CurrentUser:
        if not user.allows(role):
            raise PermissionDeniedError(
                f"this needs the {role.value} role; {user.username!r} has the {user.role.value} role"
            )
        return user

    check.__name__ = f"require_{role.value}"
    return check


AnyUser = Annotated[CurrentUser, Depends(current_user)]
Operator = Annotated[CurrentUser, Depends(require(Role.OPERATOR))]
Engineer = Annotated[CurrentUser, Depends(require(Role.ENGINEER))]
Admin = Annotated[CurrentUser, Depends(require(Role.ADMIN))]
MaybeUser = Annotated[CurrentUser | None, Depends(optional_user)]
