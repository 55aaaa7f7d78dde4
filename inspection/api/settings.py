"""Settings of the review app: database, artifact store, session secret, cookie policy.

Read from the environment with the ``INSPECTION_API_`` prefix (``INSPECTION_API_SECRET_KEY``,
``INSPECTION_API_ARTIFACT_ROOT``, ...); the database URL defaults to ``INSPECTION_DATABASE_URL``
(see :mod:`inspection.db.settings`). The secret key is a :class:`~pydantic.SecretStr`, so it never
appears in a ``repr`` or a log line.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from inspection.db.settings import get_settings as get_db_settings


def _default_database_url() -> str:
    return get_db_settings().database_url


class ApiSettings(BaseSettings):
    """Everything :func:`inspection.api.app.create_app` needs.

    ``secret_key`` signs session cookies and API tokens; when unset a random key is generated
    per process (every session ends when the server restarts), which is fine for the local demo
    and wrong for a plant: set ``INSPECTION_API_SECRET_KEY`` there. ``cookie_secure`` must be
    true behind HTTPS (then every cookie is ``Secure``). ``check_schema`` refuses to start on a database that is not at the newest
    migration; ``auto_migrate`` upgrades it instead (demo convenience).
    """

    model_config = SettingsConfigDict(env_prefix="INSPECTION_API_", extra="forbid")

    database_url: str = Field(default_factory=_default_database_url)
    artifact_root: Path = Path("var/artifacts")
    secret_key: SecretStr | None = None
    session_max_age_s: int = Field(default=12 * 3600, ge=60)
    token_max_age_s: int = Field(default=12 * 3600, ge=60)
    cookie_secure: bool = False
    check_schema: bool = True
    auto_migrate: bool = False
    overlay_cache_mib: int = Field(default=64, ge=0)
    #: Failed logins per (username, client address): after ``login_max_failures`` that address
    #: is refused for ``login_lockout_s``, doubling per further failure up to
    #: ``login_max_lockout_s``; other addresses are only delayed by ``login_busy_delay_s``
    #: while the username has that many recent failures (inspection.services.sessions).
    login_max_failures: int = Field(default=5, ge=1)
    login_lockout_s: float = Field(default=30.0, ge=0)
    login_max_lockout_s: float = Field(default=900.0, ge=0, le=3600)
    login_busy_delay_s: float = Field(default=2.0, ge=0, le=10)
    #: Live stations count as "offline" when their newest inspection is older than this.
    station_offline_after_s: float = Field(default=300.0, gt=0)
    #: Largest request body per route kind, bytes (413 above; see inspection.api.hardening).
    max_body_auth_bytes: int = Field(default=16 * 1024, ge=1024)
    max_body_api_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_body_form_bytes: int = Field(default=256 * 1024, ge=1024)
    #: Origins besides the request's own Host that may send state-changing requests (a
    #: reverse proxy's public URL), as JSON: '["https://inspection.plant.example"]'.
    trusted_origins: list[str] = Field(default_factory=list)
    #: ``GET /metrics`` needs ``Authorization: Bearer <metrics_token>``; without a token it
    #: is off (404) unless ``metrics_public`` opts in to an unauthenticated endpoint.
    metrics_token: SecretStr | None = None
    metrics_public: bool = False

    @field_validator("metrics_token")
    @classmethod
    def _no_empty_token(cls, value: SecretStr | None) -> SecretStr | None:
        """An empty token (``INSPECTION_API_METRICS_TOKEN=``) means none, never "anything"."""
        return value if value is not None and value.get_secret_value().strip() else None
