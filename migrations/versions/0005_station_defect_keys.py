"""Labelling keys per station (#19 item 1): ``station_defect_key`` (station, type, key 1-9,
unique per station) replaces ``defect_type.key``. Every existing station keeps the keys the
types had plant-wide, so nothing moves on upgrade; from now on a type takes the lowest free key
at the station where it is created or first labelled.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "station_defect_key",
        sa.Column("station_id", sa.Integer(), nullable=False),
        sa.Column("defect_type_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["defect_type_id"],
            ["defect_type.id"],
            name=op.f("fk_station_defect_key_defect_type_id_defect_type"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["station.id"],
            name=op.f("fk_station_defect_key_station_id_station"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("station_id", "defect_type_id", name=op.f("pk_station_defect_key")),
    )
    op.create_index(
        "uq_station_defect_key_station_key",
        "station_defect_key",
        ["station_id", "key"],
        unique=True,
    )
    op.execute(
        "INSERT INTO station_defect_key (station_id, defect_type_id, key) "
        "SELECT station.id, defect_type.id, defect_type.key FROM station CROSS JOIN defect_type "
        "WHERE defect_type.key IS NOT NULL"
    )
    op.drop_index("uq_defect_type_key", table_name="defect_type")
    # a plain ALTER TABLE (SQLite >= 3.35 drops an unindexed column), so `--sql` works offline
    op.drop_column("defect_type", "key")


def downgrade() -> None:
    op.add_column("defect_type", sa.Column("key", sa.Integer(), nullable=True))
    if not op.get_context().as_sql:
        bind = op.get_bind()
        # back to one plant-wide mapping: the keys of the station that has the most, else
        # name order (as 0004 gave them)
        rows = bind.execute(
            sa.text(
                "SELECT defect_type_id, key FROM station_defect_key WHERE station_id = ("
                " SELECT station_id FROM station_defect_key GROUP BY station_id"
                " ORDER BY count(*) DESC, station_id LIMIT 1)"
            )
        ).all()
        if not rows:
            ids = bind.execute(sa.text("SELECT id FROM defect_type ORDER BY name LIMIT 9"))
            rows = [(type_id, key) for key, type_id in enumerate(ids.scalars(), start=1)]
        for type_id, key in rows:
            bind.execute(
                sa.text("UPDATE defect_type SET key = :key WHERE id = :id"),
                {"key": key, "id": type_id},
            )
    op.create_index("uq_defect_type_key", "defect_type", ["key"], unique=True)
    op.drop_index("uq_station_defect_key_station_key", table_name="station_defect_key")
    op.drop_table("station_defect_key")
