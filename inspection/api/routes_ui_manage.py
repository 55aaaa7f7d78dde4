"""Server-rendered pages for engineers and admins: model versions and retraining, accounts, the
audit log and the API reference (same conventions as :mod:`.routes_ui`)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from inspection.api import confirmations
from inspection.api.confirmations import Ask
from inspection.api.deps import (
    Admin,
    Ctx,
    Engineer,
    MaybeUser,
    Operator,
    ReadSession,
    WriteSession,
)
from inspection.api.routes_api import (
    MAX_ID,
    IdPath,
    actor_of,
)
from inspection.api.routes_api_manage import compare_rows
from inspection.api.routes_ui import redirect, redirect_errors, render
from inspection.api.schemas import (
    model_out,
)
from inspection.db.models import ModelStatus, Role
from inspection.errors import InspectionError
from inspection.services import audit as audit_service
from inspection.services import (
    jobs,
    review_queue,
    users,
)
from inspection.services import models as models_service

router = APIRouter(include_in_schema=False)


# -- models and retraining -----------------------------------------------------------------


@router.get("/models", response_class=HTMLResponse)
def models_page(
    request: Request,
    ctx: Ctx,
    user: Operator,
    session: ReadSession,
    a: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    b: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Response:
    """Model versions per station: metrics, compare two, promote, roll back, retrain."""
    stations = review_queue.stations_by_id(session)
    versions = models_service.model_versions(session)
    stats = models_service.model_inspection_stats(session, [v.id for v in versions])
    outs = {v.id: model_out(v, stats.get(v.id)) for v in versions}
    by_station: dict[int | None, list[Any]] = {}
    for v in versions:
        by_station.setdefault(v.station_id, []).append(outs[v.id])
    metric_keys: list[str] = []
    for out in outs.values():
        for key, value in out.metrics.items():
            if isinstance(value, int | float) and key not in metric_keys:
                metric_keys.append(key)
    compare = None
    if a is not None and b is not None:
        va, vb = (
            models_service.get_model_version(session, a),
            models_service.get_model_version(session, b),
        )
        out_a = outs.get(va.id) or model_out(va, stats.get(va.id))
        out_b = outs.get(vb.id) or model_out(vb, stats.get(vb.id))
        compare = {"a": out_a, "b": out_b, "rows": compare_rows(out_a, out_b)}
    # the version a rollback would reactivate (None: nothing to roll back to), named in the
    # confirmation the page asks for
    rollback_to = {
        sid: next(iter(models_service.rollback_candidates(session, station_id=sid)), None)
        for sid in stations
    }
    return render(
        request,
        ctx,
        "models.html",
        user,
        stations=stations,
        by_station=by_station,
        metric_keys=metric_keys[:5],
        compare=compare,
        jobs=jobs.retrain_jobs(session, limit=20),
        rollback_to=rollback_to,
        can_edit=user.allows(Role.ENGINEER),
        ModelStatus=ModelStatus,
        nav="models",
        title="Models",
    )


@router.post("/models/{model_version_id}/promote")
@redirect_errors("/models")
def promote(model_version_id: IdPath, user: Engineer, session: WriteSession, ask: Ask) -> Response:
    """Promote a model version (engineer; unconfirmed: a page that names the change)."""
    if not ask.confirmed:
        return ask.page(confirmations.promote_change(session, model_version_id))
    version = models_service.promote(
        session, model_version_id=model_version_id, actor=actor_of(user)
    )
    return redirect("/models", text=f"{version.name} is now active.")


@router.post("/stations/{station_id}/rollback")
@redirect_errors("/models")
def rollback(station_id: IdPath, user: Engineer, session: WriteSession, ask: Ask) -> Response:
    """Roll a station back to its previous model (engineer; unconfirmed: a page that names
    the change)."""
    change = None if ask.confirmed else confirmations.rollback_change(session, station_id)
    if change is not None:
        return ask.page(change)
    version = models_service.rollback(session, station_id=station_id, actor=actor_of(user))
    return redirect("/models", text=f"Rolled back: {version.name} is active again.")


@router.post("/retrain-jobs")
@redirect_errors("/models")
def request_retraining(
    user: Engineer,
    session: WriteSession,
    station_id: Annotated[int, Form(ge=1, le=MAX_ID)],
) -> Response:
    """Queue a retraining job for a station (engineer)."""
    job = jobs.request_retraining(
        session, station_id=station_id, requested_by=user.id, from_active=True
    )
    return redirect("/models", text=f"Retraining job {job.id} queued.")


@router.post("/retrain-jobs/{job_id}/cancel")
@redirect_errors("/models")
def cancel_retraining(job_id: IdPath, user: Engineer, session: WriteSession) -> Response:
    """Cancel a retraining job (engineer)."""
    jobs.cancel(session, job_id=job_id, actor=actor_of(user))
    return redirect("/models", text=f"Retraining job {job_id}: cancel requested.")


# -- users and audit -----------------------------------------------------------------------


@router.get("/admin/users", response_class=HTMLResponse)
def users_page(request: Request, ctx: Ctx, user: Admin, session: ReadSession) -> Response:
    """Accounts: create, change role, deactivate, reset password (admin)."""
    return render(
        request,
        ctx,
        "users.html",
        user,
        accounts=users.list_users(session),
        roles=list(Role),
        min_password_length=users.MIN_PASSWORD_LENGTH,
        nav="users",
        title="Users",
    )


def _account_error(exc: Exception) -> str:
    """The one line an admin sees for a refused account form (never the password)."""
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        if error["loc"] and error["loc"][0] == "username":
            return "Usernames are 3-64 letters, digits, '.', '_' or '-'."
        if error["type"] == "string_too_short":
            return f"Passwords need at least {users.MIN_PASSWORD_LENGTH} characters."
        return str(error["msg"]).removeprefix("Value error, ")
    return str(exc).splitlines()[0] if str(exc) else "invalid input"


@router.post("/admin/users")
@redirect_errors("/admin/users", (ValueError, InspectionError), _account_error)
def create_user(
    user: Admin,
    session: WriteSession,
    username: Annotated[str, Form(min_length=1, max_length=64)],
    role: Annotated[Role, Form()],
    password: Annotated[str, Form(min_length=1, max_length=1024)],
    display_name: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Create an account (admin)."""
    from inspection.api.schemas import UserIn

    body = UserIn(
        username=username,
        role=role,
        password=password,
        display_name=display_name.strip() or None,
    )
    users.add_account(session, body, created_by=actor_of(user))
    return redirect("/admin/users", text=f"Account {username} created.")


@router.post("/admin/users/{user_id}")
@redirect_errors("/admin/users", (ValueError, InspectionError))
def update_user(
    user_id: IdPath,
    user: Admin,
    session: WriteSession,
    role: Annotated[Role | None, Form()] = None,
    is_active: Annotated[str | None, Form(max_length=8)] = None,
    password: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    """Change an account's role, active flag or password (admin)."""
    users.change_user(
        session,
        user_id=user_id,
        actor=actor_of(user),
        role=role,
        is_active=None if is_active is None else is_active == "true",
        password=password or None,
    )
    return redirect("/admin/users", text="Account updated.")


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    ctx: Ctx,
    user: Engineer,
    session: ReadSession,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    entity_type: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    """The audit log, newest first (engineer)."""
    limit = 100
    rows = audit_service.audit_page(
        session,
        limit=limit,
        before_id=before_id,
        entity_type=entity_type or None,
        actor=actor or None,
    )
    params = {k: v for k, v in {"entity_type": entity_type, "actor": actor}.items() if v}
    next_url = None
    if len(rows) == limit:
        next_url = "/audit?" + urlencode({**params, "before_id": rows[-1].id})
    return render(
        request,
        ctx,
        "audit.html",
        user,
        rows=rows,
        entity_type=entity_type or "",
        actor=actor or "",
        next_url=next_url,
        nav="audit",
        title="Audit log",
    )


# -- API reference -------------------------------------------------------------------------


@router.get("/docs", response_class=HTMLResponse)
def api_docs(request: Request, ctx: Ctx, user: MaybeUser) -> Response:
    """The REST API reference, rendered from the OpenAPI schema (no third-party viewer)."""
    schema = request.app.openapi()
    groups: dict[str, list[dict[str, Any]]] = {}
    for path, methods in schema.get("paths", {}).items():
        for method, op in methods.items():
            tag = (op.get("tags") or ["other"])[0]
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            groups.setdefault(tag, []).append(
                {
                    "method": method.upper(),
                    "path": path,
                    "summary": op.get("summary", ""),
                    "description": op.get("description", ""),
                    "parameters": op.get("parameters", []),
                    "body": _ref_name(body.get("schema")),
                    "responses": {
                        code: _ref_name(
                            resp.get("content", {}).get("application/json", {}).get("schema")
                        )
                        or resp.get("description", "")
                        for code, resp in op.get("responses", {}).items()
                    },
                }
            )
    models = schema.get("components", {}).get("schemas", {})
    return render(
        request,
        ctx,
        "docs.html",
        user,
        info=schema.get("info", {}),
        groups=groups,
        models=models,
        nav="docs",
        title="API reference",
    )


def _ref_name(schema: dict[str, Any] | None) -> str:
    if not schema:
        return ""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        return f"list[{_ref_name(schema['items'])}]"
    if "anyOf" in schema:
        return " | ".join(_ref_name(s) or str(s.get("type", "")) for s in schema["anyOf"])
    return str(schema.get("type", ""))
