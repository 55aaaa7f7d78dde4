"""Ending logins: ``POST /api/auth/logout`` (the bearer token or cookie that was presented) and
the admin action "sign out everywhere" (API and users page). The rules live in
:mod:`inspection.services.sessions`; ``POST /logout`` (the browser's form) is in
:mod:`inspection.api.routes_ui`.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from inspection.api.deps import Admin, AnyUser, Ctx, WriteSession, end_login
from inspection.api.routes_api import CONFLICT, ERRORS, NOT_FOUND, IdPath, actor_of
from inspection.api.routes_ui import redirect, redirect_errors
from inspection.api.schemas import UserOut
from inspection.services import sessions

router = APIRouter(responses=ERRORS)


@router.post("/api/auth/logout", tags=["auth"], status_code=204)
def api_logout(ctx: Ctx, user: AnyUser, session: WriteSession) -> Response:
    """End the login that was presented (a bearer token, or a cookie session with its CSRF
    token) on the server: it gets 401 from now on (audited ``user.logout``)."""
    end_login(ctx, session, user)
    return Response(status_code=204)


@router.post(
    "/api/users/{user_id}/sign-out-everywhere",
    tags=["users"],
    response_model=UserOut,
    responses={**NOT_FOUND, **CONFLICT},
)
def api_sign_out_everywhere(user_id: IdPath, user: Admin, session: WriteSession) -> UserOut:
    """End every session and token of a user, the admin's own included when it is theirs
    (admin; audited ``user.sign_out_everywhere``)."""
    done = sessions.sign_out_everywhere(session, user_id=user_id, actor=actor_of(user))
    return UserOut.model_validate(done)


@router.post("/admin/users/{user_id}/sign-out-everywhere", include_in_schema=False)
@redirect_errors("/admin/users")
def sign_out_everywhere(user_id: IdPath, user: Admin, session: WriteSession) -> Response:
    """The users page's "Sign out everywhere" button (admin)."""
    done = sessions.sign_out_everywhere(session, user_id=user_id, actor=actor_of(user))
    if done.id == user.id:
        return redirect("/login", text="You were signed out everywhere.")
    return redirect("/admin/users", text=f"{done.username} was signed out everywhere.")
