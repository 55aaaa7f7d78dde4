"""Revocable sessions, persisted login throttling, case-insensitive usernames.

``users.session_generation`` (every login carries it; raising it ends all of a user's
sessions), ``revoked_session`` (single logins ended by logout), ``login_failure`` (failed logins
per username and client address) and a unique index on ``lower(username)``.

Upgrading refuses, with the names, a database holding two usernames that differ only in case:
an admin renames or deletes one of them first (accounts are never merged silently).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _refuse_case_duplicates() -> None:
    if op.get_context().as_sql:
        return  # offline (--sql): nothing to look at
    rows = op.get_bind().execute(
        sa.text("SELECT lower(username) FROM users GROUP BY lower(username) HAVING count(*) > 1")
    )
    clashes = sorted(str(row[0]) for row in rows)
    if clashes:
        raise RuntimeError(
            "usernames must be unique regardless of case; rename or delete one account of each "
            f"of these before upgrading: {', '.join(clashes)}"
        )


def upgrade() -> None:
    _refuse_case_duplicates()
    op.add_column(
        "users",
        sa.Column("session_generation", sa.Integer(), server_default="0", nullable=False),
    )
    op.create_index(
        "uq_users_username_lower", "users", [sa.literal_column("lower(username)")], unique=True
    )
    op.create_table(
        "revoked_session",
        sa.Column("sid", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_revoked_session_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("sid", name=op.f("pk_revoked_session")),
    )
    op.create_index(
        op.f("ix_revoked_session_expires_at"), "revoked_session", ["expires_at"], unique=False
    )
    op.create_table(
        "login_failure",
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("username", "address", name=op.f("pk_login_failure")),
    )
    op.create_index(
        op.f("ix_login_failure_last_failure_at"),
        "login_failure",
        ["last_failure_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_login_failure_last_failure_at"), table_name="login_failure")
    op.drop_table("login_failure")
    op.drop_index(op.f("ix_revoked_session_expires_at"), table_name="revoked_session")
    op.drop_table("revoked_session")
    op.drop_index("uq_users_username_lower", table_name="users")
    op.drop_column("users", "session_generation")
