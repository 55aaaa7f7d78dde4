"""Errors the API raises itself (authentication, authorisation, CSRF); mapped to 401/403.

Errors from the rest of the package (:mod:`inspection.errors`) are mapped to status codes in
:mod:`inspection.api.app`.
"""

from __future__ import annotations

from inspection.errors import InspectionError, LoginThrottledError

__all__ = [
    "AuthenticationRequiredError",
    "CsrfError",
    "LoginThrottledError",
    "PermissionDeniedError",
]


class AuthenticationRequiredError(InspectionError):
    """No valid session cookie or bearer token came with the request (HTTP 401)."""


class PermissionDeniedError(InspectionError):
    """The user is logged in but their role does not allow this (HTTP 403)."""


class CsrfError(PermissionDeniedError):
    """A cookie-authenticated state change came without the session's CSRF token (HTTP 403)."""
