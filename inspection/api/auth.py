"""Authentication: signed session cookies (UI, with CSRF tokens) and bearer tokens (API).

Both are stateless and signed with the app's secret key (itsdangerous, HMAC-SHA256):

* The **session cookie** ``inspection_session`` (HttpOnly, SameSite=Lax) holds the user id, a
  random CSRF token, a random session id, the user's password-hash fingerprint and session
  generation. Whether those still stand is decided on the server for every request
  (:func:`inspection.services.sessions.session_user`): logout revokes the session id, and a
  password change, deactivation or "sign out everywhere" raises the generation, so the old
  cookie gets 401 although its signature is still good. Every state-changing request authenticated by
  the cookie must echo the CSRF token in the ``X-CSRF-Token`` header (JavaScript) or a
  ``csrf_token`` form field (HTML forms).
* **Bearer tokens** (``Authorization: Bearer ...`` from ``POST /api/auth/token``) carry the same
  claims without a CSRF token; browsers never send them by themselves, so they need none.

Roles are ordered: ``operator`` < ``engineer`` < ``admin``; a route asking for a role admits
every higher one. Passwords are only ever compared through :mod:`inspection.db.security`.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from inspection.db.models import Role, User
from inspection.services.sessions import new_session_id, password_fingerprint

log = logging.getLogger(__name__)

SESSION_COOKIE = "inspection_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FORM_FIELD = "csrf_token"
ROLE_RANK: dict[Role, int] = {Role.OPERATOR: 0, Role.ENGINEER: 1, Role.ADMIN: 2}


def role_allows(have: Role, need: Role) -> bool:
    """Whether a user with role ``have`` may do what ``need`` is required for."""
    return ROLE_RANK[have] >= ROLE_RANK[need]


@dataclass(frozen=True)
class Claims:
    """What a valid session cookie or token says: who, which login (``sid``, ``generation``),
    and (cookies only) the CSRF token."""

    user_id: int
    fingerprint: str
    generation: int
    sid: str
    csrf: str | None = None


class TokenSigner:
    """Signs and verifies session cookies and API tokens with one secret key."""

    def __init__(self, secret_key: str, *, session_max_age_s: int, token_max_age_s: int) -> None:
        self._session = URLSafeTimedSerializer(secret_key, salt="inspection.session")
        self._token = URLSafeTimedSerializer(secret_key, salt="inspection.api-token")
        self.session_max_age_s = session_max_age_s
        self.token_max_age_s = token_max_age_s

    def new_session(self, user: User) -> tuple[str, str]:
        """A signed session cookie value for ``user`` and its fresh CSRF token."""
        csrf = secrets.token_urlsafe(24)
        value = self._session.dumps({**_login_claims(user), "csrf": csrf})
        return value, csrf

    def read_session(self, value: str) -> Claims | None:
        """The claims of a session cookie, or None when forged, malformed or expired."""
        data = self._loads(self._session, value, self.session_max_age_s)
        if data is None or not isinstance(data.get("csrf"), str):
            return None
        return Claims(
            user_id=data["uid"],
            fingerprint=data["fp"],
            generation=data["gen"],
            sid=data["sid"],
            csrf=data["csrf"],
        )

    def new_token(self, user: User) -> str:
        """A bearer token for ``user`` (valid ``token_max_age_s`` seconds)."""
        return self._token.dumps(_login_claims(user))

    def read_token(self, value: str) -> Claims | None:
        """The claims of a bearer token, or None when forged, malformed or expired."""
        data = self._loads(self._token, value, self.token_max_age_s)
        if data is None:
            return None
        return Claims(
            user_id=data["uid"], fingerprint=data["fp"], generation=data["gen"], sid=data["sid"]
        )

    @staticmethod
    def _loads(
        serializer: URLSafeTimedSerializer, value: str, max_age_s: int
    ) -> dict[str, Any] | None:
        try:
            data = serializer.loads(value, max_age=max_age_s)
        except SignatureExpired:
            return None
        except BadSignature:
            log.debug("rejected a credential with a bad signature")
            return None
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("uid"), int)
            or not isinstance(data.get("fp"), str)
            or not isinstance(data.get("gen"), int)
            or not isinstance(data.get("sid"), str)
        ):
            return None
        return data


def _login_claims(user: User) -> dict[str, Any]:
    """The claims of a new login of ``user``: who, the password fingerprint, the session
    generation and a fresh random session id."""
    return {
        "uid": user.id,
        "fp": password_fingerprint(user),
        "gen": user.session_generation or 0,
        "sid": new_session_id(),
    }


def csrf_matches(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison of the session's CSRF token with the one a request sent."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())
