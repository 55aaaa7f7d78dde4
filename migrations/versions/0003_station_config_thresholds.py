"""The thresholds of each station's own configuration file, so the UI shows what applies.

``station.config_image_threshold`` and ``station.config_pixel_threshold``: written by the
station when it starts (the file is the authority); the station applies the operators'
threshold, else these, else 0.5 on the normalised score (the model's calibrated threshold).
Existing stations show the file's value after their next start.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("station", sa.Column("config_image_threshold", sa.Double(), nullable=True))
    op.add_column("station", sa.Column("config_pixel_threshold", sa.Double(), nullable=True))


def downgrade() -> None:
    op.drop_column("station", "config_pixel_threshold")
    op.drop_column("station", "config_image_threshold")
