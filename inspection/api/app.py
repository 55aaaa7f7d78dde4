"""The FastAPI application factory: :func:`create_app` wires settings, database, artifact store,
authentication, routes, templates, static files and error handling together.

Nothing happens at import time; ``create_app`` builds the engine (which does not connect yet),
and the app's start-up checks that the database schema is at the newest migration (or upgrades
it with ``auto_migrate``).

Errors become clear responses, never a bare 500: 401 (not logged in; browsers are redirected
to the login page), 403 (role, CSRF), 404, 409 (illegal state change, duplicate), 422 (invalid
input, with the offending fields), 429 (login throttled), 503 (database or artifact store
unavailable). API paths answer JSON ``{"detail": ...}``; pages answer an HTML error page.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inspection.api import charts
from inspection.api.auth import CSRF_FORM_FIELD, TokenSigner
from inspection.api.deps import AppContext, CurrentUser, optional_user
from inspection.api.errors import (
    AuthenticationRequiredError,
    LoginThrottledError,
    PermissionDeniedError,
)
from inspection.api.hardening import (
    BodyLimit,
    BodyLimits,
    HttpMiddleware,
    OriginCheck,
    secure_cookie,
)
from inspection.api.images import ImageService
from inspection.api.metrics import install_metrics
from inspection.api.settings import ApiSettings
from inspection.db.engine import check_schema_at_head, make_engine, make_session_factory
from inspection.db.models import Role
from inspection.errors import (
    ArtifactNotFoundError,
    DatabaseError,
    ImageDecodeError,
    InspectionError,
    InvalidCursorError,
    InvalidStateError,
    NotFoundError,
    StorageError,
    UnsafeArtifactKeyError,
)
from inspection.services.sessions import InvalidCredentialsError, LoginThrottle
from inspection.storage import LocalArtifactStore

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"
API_VERSION = "1.0"

#: No third-party origins: scripts, styles and images come from this server only.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeaders(HttpMiddleware):
    """Pure ASGI middleware adding :data:`SECURITY_HEADERS` to every HTTP response,
    ``Cache-Control: no-store`` to API answers and HTML pages, and (``secure_cookies``) the
    ``Secure`` attribute to every ``Set-Cookie`` (session, login CSRF, flash, deletions)."""

    def __init__(self, app: ASGIApp, *, secure_cookies: bool = False) -> None:
        super().__init__(app)
        self.secure_cookies = secure_cookies

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                # API answers and HTML pages (they carry names, labels, CSRF tokens) are never
                # stored by browsers or proxies; static files and images keep their caching.
                is_page = content_type.startswith(b"text/html")
                if (
                    scope["path"].startswith("/api/") or is_page
                ) and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                if self.secure_cookies:
                    headers = [secure_cookie(name, value) for name, value in headers]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def make_templates() -> Jinja2Templates:
    """The Jinja2 environment of the pages (autoescaping on), with the chart helpers."""
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    env = templates.env
    env.filters["when"] = charts.fmt_when
    env.filters["ago"] = charts.fmt_ago
    env.globals["score_bar"] = charts.score_bar
    env.filters["rst"] = charts.inline_code
    return templates


def build_context(settings: ApiSettings) -> AppContext:
    """Engine, session factories, artifact store, signer and caches for one app."""
    engine = make_engine(settings.database_url)
    if settings.secret_key is not None:
        secret = settings.secret_key.get_secret_value()
    else:
        secret = secrets.token_urlsafe(32)
        log.warning(
            "INSPECTION_API_SECRET_KEY is not set: using a random key, so every login ends "
            "when the server restarts (set it on plant servers)"
        )
    store = LocalArtifactStore(settings.artifact_root)
    return AppContext(
        settings=settings,
        engine=engine,
        write_sessions=make_session_factory(engine),
        read_sessions=make_session_factory(engine, read_only=True),
        store=store,
        images=ImageService(store, cache_bytes=settings.overlay_cache_mib * 1024 * 1024),
        signer=TokenSigner(
            secret,
            session_max_age_s=settings.session_max_age_s,
            token_max_age_s=settings.token_max_age_s,
        ),
        throttle=LoginThrottle(
            free_failures=settings.login_max_failures,
            lockout_s=settings.login_lockout_s,
            max_lockout_s=max(settings.login_lockout_s, settings.login_max_lockout_s),
            new_address_delay_s=settings.login_busy_delay_s,
        ),
        templates=make_templates(),
    )


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """Build the review app for ``settings`` (default: from the environment)."""
    from inspection.api import (
        routes_api,
        routes_api_inspections,
        routes_api_manage,
        routes_defect_types,
        routes_sessions,
        routes_ui,
        routes_ui_manage,
    )

    settings = settings or ApiSettings()
    ctx = build_context(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.auto_migrate:
            from inspection.db import migrate

            migrate.upgrade(ctx.engine)
        if settings.check_schema:
            revision = check_schema_at_head(ctx.engine)
            log.info("review app ready (schema %s, artifacts in %s)", revision, ctx.store)
        yield
        ctx.engine.dispose()

    app = FastAPI(
        title="inspection review API",
        version=API_VERSION,
        description=(routes_api.__doc__ or "").strip(),
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    install_openapi(app)
    # innermost first: body limit and origin check run before routing, auth and parsing
    app.add_middleware(
        BodyLimit,
        limits=BodyLimits(
            auth=settings.max_body_auth_bytes,
            api=settings.max_body_api_bytes,
            form=settings.max_body_form_bytes,
        ),
    )
    app.add_middleware(OriginCheck, trusted_origins=settings.trusted_origins)
    install_metrics(app, ctx)
    app.add_middleware(SecurityHeaders, secure_cookies=settings.cookie_secure)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    app.include_router(routes_api.router)
    app.include_router(routes_api_inspections.router)
    app.include_router(routes_api_manage.router)
    app.include_router(routes_ui.router)
    app.include_router(routes_ui_manage.router)
    app.include_router(routes_sessions.router)
    app.include_router(routes_defect_types.router)
    install_error_handlers(app, ctx)
    return app


def install_openapi(app: FastAPI) -> None:
    """Document the two ways to authenticate (bearer token, session cookie) in the schema."""
    from fastapi.openapi.utils import get_openapi

    public = {"/api/health", "/api/ready", "/api/auth/token"}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "Token from POST /api/auth/token.",
            },
            "session": {
                "type": "apiKey",
                "in": "cookie",
                "name": "inspection_session",
                "description": "Browser session from the login page; changes also need the "
                "X-CSRF-Token header.",
            },
        }
        schema["security"] = [{"bearer": []}, {"session": []}]
        for path in public:
            for operation in schema.get("paths", {}).get(path, {}).values():
                operation["security"] = []
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


# -- errors --------------------------------------------------------------------------------


def _is_api(request: Request) -> bool:
    path = request.url.path
    return path.startswith("/api/") or path in {"/api", "/openapi.json"}


def _wants_html(request: Request) -> bool:
    return not _is_api(request) and "text/html" in request.headers.get("accept", "")


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip() if exc is not None else ""
    return text.splitlines()[0] if text else type(exc).__name__


async def _page_user(request: Request, ctx: AppContext) -> CurrentUser | None:
    """The logged-in user of an error page (so it keeps the navigation bar), or None when
    there is none or it cannot be read (the error page itself must not fail)."""
    try:
        return await optional_user(request, ctx)
    except (SQLAlchemyError, InspectionError):  # e.g. the database is what failed
        log.debug("error page: could not read the user", exc_info=True)
        return None


@dataclass(frozen=True)
class ErrorRule:
    """How an expected exception type reaches the client: its status and detail (``{exc}``
    stands for the exception's message), and for the ones the log should show, the level and
    message (``%s``: the exception)."""

    status: int
    detail: str = "{exc}"
    log_level: int | None = None
    log_message: str = ""
    headers: Mapping[str, str] | None = None


#: Exception type -> its response. Starlette picks the handler of the nearest type in the
#: exception's MRO, so a subclass listed here (ArtifactNotFoundError) wins over its base.
ERROR_RULES: dict[type[Exception], ErrorRule] = {
    InvalidCredentialsError: ErrorRule(401, headers={"WWW-Authenticate": "Bearer"}),
    PermissionDeniedError: ErrorRule(403),
    InvalidCursorError: ErrorRule(400, "{exc}; start again without a cursor"),
    NotFoundError: ErrorRule(404),
    ArtifactNotFoundError: ErrorRule(
        404, "the file is no longer in the artifact store", logging.WARNING, "artifact missing: %s"
    ),
    UnsafeArtifactKeyError: ErrorRule(
        404, "the file is not available", logging.WARNING, "refused an unsafe artifact key: %s"
    ),
    ImageDecodeError: ErrorRule(
        500,
        "the stored image is corrupt and cannot be shown",
        logging.ERROR,
        "stored image cannot be decoded: %s",
    ),
    StorageError: ErrorRule(
        503, "artifact store unavailable: {exc}", logging.ERROR, "artifact store error: %s"
    ),
    InvalidStateError: ErrorRule(409),
    ValueError: ErrorRule(400, "invalid request: {exc}"),
}

Respond = Callable[..., Awaitable[Response]]
Handler = Callable[[Request, Any], Awaitable[Response]]


def _responder(ctx: AppContext) -> Respond:
    """``respond(request, status, detail, *, errors=None, headers=None)``: the error as JSON
    ``{"detail": ...}`` for the API, as the error page (with the user's navigation) for
    browsers."""

    async def respond(
        request: Request,
        status: int,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        if _wants_html(request):
            user = await _page_user(request, ctx) if status not in (401, 503) else None
            return ctx.templates.TemplateResponse(
                request,
                "error.html",
                {
                    "status": status,
                    "detail": detail,
                    "user": user,
                    "csrf": user.csrf if user is not None else None,
                    "csrf_field": CSRF_FORM_FIELD,
                    "Role": Role,
                    "title": f"Error {status}",
                },
                status_code=status,
                headers=headers,
            )
        body: dict[str, Any] = {"detail": detail}
        if errors is not None:
            body["errors"] = errors
        return JSONResponse(body, status_code=status, headers=headers)

    return respond


def _rule_handler(rule: ErrorRule, respond: Respond) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        if rule.log_level is not None:
            log.log(rule.log_level, rule.log_message, exc)
        detail = rule.detail.format(exc=exc)
        return await respond(request, rule.status, detail, headers=rule.headers)

    return handle


def install_error_handlers(app: FastAPI, ctx: AppContext) -> None:
    """Map every expected error to a clear 4xx/503 (JSON for the API, a page for browsers):
    the simple ones by :data:`ERROR_RULES`, the rest by a handler of their own."""
    respond = _responder(ctx)
    for exc_type, rule in ERROR_RULES.items():
        app.add_exception_handler(exc_type, _rule_handler(rule, respond))

    def on(exc_type: type[Exception]) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            app.add_exception_handler(exc_type, fn)
            return fn

        return register

    @on(AuthenticationRequiredError)
    async def _unauthenticated(request: Request, exc: AuthenticationRequiredError) -> Response:
        if not _is_api(request) and request.method == "GET":
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        return await respond(request, 401, str(exc), headers={"WWW-Authenticate": "Bearer"})

    @on(LoginThrottledError)
    async def _throttled(request: Request, exc: LoginThrottledError) -> Response:
        retry = str(max(1, round(exc.retry_after_s)))
        return await respond(request, 429, str(exc), headers={"Retry-After": retry})

    @on(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = []
        for error in exc.errors():
            # Never echo the input back: it may be a password.
            clean = {k: v for k, v in error.items() if k in ("type", "loc", "msg")}
            errors.append(jsonable_encoder(clean))
        summary = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in errors
        )
        return await respond(request, 422, f"invalid request: {summary}", errors=errors)

    @on(IntegrityError)
    async def _integrity(request: Request, exc: IntegrityError) -> Response:
        log.info("integrity error: %s", _first_line(exc.orig))
        return await respond(
            request, 409, "the change conflicts with existing data (duplicate or in use)"
        )

    async def _db_down(request: Request, exc: Exception) -> Response:
        reason = _first_line(exc.orig) if isinstance(exc, DBAPIError) else _first_line(exc)
        log.error("database unavailable: %s", reason)
        return await respond(
            request,
            503,
            f"database unavailable, try again shortly ({reason})",
            headers={"Retry-After": "5"},
        )

    for db_error in (DBAPIError, PoolTimeoutError, DatabaseError):
        app.add_exception_handler(db_error, _db_down)

    @on(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"nothing at {request.url.path}"
        return await respond(
            request, exc.status_code, detail, headers=getattr(exc, "headers", None)
        )
