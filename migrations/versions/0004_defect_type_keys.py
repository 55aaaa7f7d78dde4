"""Stable labelling keys: ``defect_type.key`` (1-9, unique), so creating a type never moves
the keys of the others. Existing types keep the keys they had (1-9 in name order).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("defect_type", sa.Column("key", sa.Integer(), nullable=True))
    if not op.get_context().as_sql:
        bind = op.get_bind()
        ids = bind.execute(sa.text("SELECT id FROM defect_type ORDER BY name LIMIT 9")).scalars()
        for key, type_id in enumerate(list(ids), start=1):
            bind.execute(
                sa.text("UPDATE defect_type SET key = :key WHERE id = :id"),
                {"key": key, "id": type_id},
            )
    op.create_index("uq_defect_type_key", "defect_type", ["key"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_defect_type_key", table_name="defect_type")
    op.drop_column("defect_type", "key")
