"""Initial schema.

Lines, stations, cameras, users, model versions, inspections, defect regions, artifacts,
operator labels, retrain jobs, training sets and the audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# retrain_job.base_model_version_id -> model_version and model_version.training_job_id ->
# retrain_job form a cycle. SQLite accepts a foreign key to a table created later (and cannot
# ALTER TABLE ADD CONSTRAINT), so there it is declared inline; elsewhere it is added once both
# tables exist. Both ways give the same named constraint, and no batch (table copy) is needed,
# so `alembic upgrade head --sql` works offline for SQLite too.
_CYCLE_FK = "fk_retrain_job_base_model_version_id_model_version"


def _is_sqlite() -> bool:
    return op.get_context().dialect.name == "sqlite"


def upgrade() -> None:
    cycle_fk_inline = (
        [
            sa.ForeignKeyConstraint(
                ["base_model_version_id"],
                ["model_version.id"],
                name=op.f(_CYCLE_FK),
                ondelete="SET NULL",
            )
        ]
        if _is_sqlite()
        else []
    )
    op.create_table(
        "defect_type",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_defect_type")),
        sa.UniqueConstraint("name", name=op.f("uq_defect_type_name")),
    )
    op.create_table(
        "line",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_line")),
        sa.UniqueConstraint("name", name=op.f("uq_line_name")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=True),
        sa.Column(
            "role",
            sa.Enum(
                "operator",
                "engineer",
                "admin",
                name="role",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("entity_type", sa.String(length=64), nullable=False),
        sa.Column("entity_id", sa.String(length=64), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_audit_log_user_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"], unique=False)
    op.create_index(
        op.f("ix_audit_log_entity_type_entity_id"),
        "audit_log",
        ["entity_type", "entity_id"],
        unique=False,
    )
    op.create_table(
        "station",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("line_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("image_threshold", sa.Double(), nullable=True),
        sa.Column("pixel_threshold", sa.Double(), nullable=True),
        sa.Column("thresholds_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retention_days", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["line_id"], ["line.id"], name=op.f("fk_station_line_id_line"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_station")),
        sa.UniqueConstraint("name", name=op.f("uq_station_name")),
    )
    op.create_index(op.f("ix_station_line_id"), "station", ["line_id"], unique=False)
    op.create_table(
        "camera",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("station_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("serial", sa.String(length=100), nullable=True),
        sa.Column("width_px", sa.Integer(), nullable=True),
        sa.Column("height_px", sa.Integer(), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["station.id"],
            name=op.f("fk_camera_station_id_station"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_camera")),
        sa.UniqueConstraint("station_id", "name", name=op.f("uq_camera_station_id_name")),
    )
    op.create_table(
        "retrain_job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("station_id", sa.Integer(), nullable=True),
        sa.Column("base_model_version_id", sa.Integer(), nullable=True),
        sa.Column("detector_type", sa.String(length=64), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "running",
                "succeeded",
                "failed",
                "cancelled",
                name="status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("requested_by_id", sa.Integer(), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("log", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["requested_by_id"],
            ["users.id"],
            name=op.f("fk_retrain_job_requested_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["station.id"],
            name=op.f("fk_retrain_job_station_id_station"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retrain_job")),
        *cycle_fk_inline,
    )
    op.create_index(op.f("ix_retrain_job_station_id"), "retrain_job", ["station_id"], unique=False)
    op.create_index(
        op.f("ix_retrain_job_status_created_at"),
        "retrain_job",
        ["status", "created_at"],
        unique=False,
    )
    op.create_table(
        "model_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("station_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("detector_type", sa.String(length=64), nullable=False),
        sa.Column("artifact_path", sa.String(length=1024), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "candidate",
                "active",
                "retired",
                name="status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("training_job_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["model_version.id"],
            name=op.f("fk_model_version_parent_id_model_version"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["station.id"],
            name=op.f("fk_model_version_station_id_station"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["training_job_id"],
            ["retrain_job.id"],
            name=op.f("fk_model_version_training_job_id_retrain_job"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_version")),
    )
    op.create_index(
        op.f("ix_model_version_station_id"), "model_version", ["station_id"], unique=False
    )
    op.create_index(
        "uq_model_version_one_active_per_station",
        "model_version",
        ["station_id"],
        unique=True,
        sqlite_where=sa.text("status = 'active'"),
        postgresql_where=sa.text("status = 'active'"),
    )
    if not _is_sqlite():
        op.create_foreign_key(
            op.f(_CYCLE_FK),
            "retrain_job",
            "model_version",
            ["base_model_version_id"],
            ["id"],
            ondelete="SET NULL",
        )
    op.create_table(
        "inspection",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("station_id", sa.Integer(), nullable=False),
        sa.Column("camera_id", sa.Integer(), nullable=True),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("frame_ref", sa.String(length=512), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("raw_score", sa.Double(), nullable=False),
        sa.Column("norm_score", sa.Double(), nullable=False),
        sa.Column(
            "verdict",
            sa.Enum(
                "pass", "fail", name="verdict", native_enum=False, create_constraint=True, length=16
            ),
            nullable=False,
        ),
        sa.Column("latency_ms", sa.Double(), nullable=False),
        sa.Column("has_unknown", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["camera_id"],
            ["camera.id"],
            name=op.f("fk_inspection_camera_id_camera"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_version.id"],
            name=op.f("fk_inspection_model_version_id_model_version"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["station.id"],
            name=op.f("fk_inspection_station_id_station"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inspection")),
        sa.UniqueConstraint(
            "station_id", "idempotency_key", name=op.f("uq_inspection_station_id_idempotency_key")
        ),
    )
    op.create_index(op.f("ix_inspection_captured_at"), "inspection", ["captured_at"], unique=False)
    op.create_index(
        op.f("ix_inspection_has_unknown_norm_score_id"),
        "inspection",
        ["has_unknown", "norm_score", "id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_inspection_model_version_id"), "inspection", ["model_version_id"], unique=False
    )
    op.create_index(
        op.f("ix_inspection_station_id_captured_at"),
        "inspection",
        ["station_id", "captured_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_inspection_station_id_has_unknown_norm_score_id"),
        "inspection",
        ["station_id", "has_unknown", "norm_score", "id"],
        unique=False,
    )
    op.create_table(
        "defect_region",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "inspection_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("x", sa.Integer(), nullable=False),
        sa.Column("y", sa.Integer(), nullable=False),
        sa.Column("w", sa.Integer(), nullable=False),
        sa.Column("h", sa.Integer(), nullable=False),
        sa.Column("area_px", sa.Double(), nullable=False),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("defect_type_id", sa.Integer(), nullable=True),
        sa.Column("confidence", sa.Double(), nullable=True),
        sa.Column("is_unknown", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["defect_type_id"],
            ["defect_type.id"],
            name=op.f("fk_defect_region_defect_type_id_defect_type"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["inspection_id"],
            ["inspection.id"],
            name=op.f("fk_defect_region_inspection_id_inspection"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_defect_region")),
    )
    op.create_index(
        op.f("ix_defect_region_defect_type_id"), "defect_region", ["defect_type_id"], unique=False
    )
    op.create_index(
        op.f("ix_defect_region_inspection_id"), "defect_region", ["inspection_id"], unique=False
    )
    op.create_table(
        "operator_label",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "inspection_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column(
            "verdict",
            sa.Enum(
                "pass", "fail", name="verdict", native_enum=False, create_constraint=True, length=16
            ),
            nullable=False,
        ),
        sa.Column("defect_type_id", sa.Integer(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["defect_type_id"],
            ["defect_type.id"],
            name=op.f("fk_operator_label_defect_type_id_defect_type"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["inspection_id"],
            ["inspection.id"],
            name=op.f("fk_operator_label_inspection_id_inspection"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_operator_label_user_id_users"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_label")),
    )
    op.create_index(
        op.f("ix_operator_label_inspection_id_user_id_id"),
        "operator_label",
        ["inspection_id", "user_id", "id"],
        unique=False,
    )
    op.create_index(op.f("ix_operator_label_user_id"), "operator_label", ["user_id"], unique=False)
    op.create_table(
        "training_set_item",
        sa.Column("retrain_job_id", sa.Integer(), nullable=False),
        sa.Column(
            "inspection_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("split", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["inspection_id"],
            ["inspection.id"],
            name=op.f("fk_training_set_item_inspection_id_inspection"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["retrain_job_id"],
            ["retrain_job.id"],
            name=op.f("fk_training_set_item_retrain_job_id_retrain_job"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "retrain_job_id", "inspection_id", name=op.f("pk_training_set_item")
        ),
    )
    op.create_index(
        op.f("ix_training_set_item_inspection_id"),
        "training_set_item",
        ["inspection_id"],
        unique=False,
    )
    op.create_table(
        "artifact",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "inspection_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("region_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "kind",
            sa.Enum(
                "frame",
                "heatmap",
                "overlay",
                "crop",
                name="kind",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("store_key", sa.String(length=512), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("media_type", sa.String(length=64), nullable=True),
        sa.Column("width_px", sa.Integer(), nullable=True),
        sa.Column("height_px", sa.Integer(), nullable=True),
        sa.Column("heatmap_max", sa.Double(), nullable=True),
        sa.Column("heatmap_mean", sa.Double(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["inspection_id"],
            ["inspection.id"],
            name=op.f("fk_artifact_inspection_id_inspection"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["region_id"],
            ["defect_region.id"],
            name=op.f("fk_artifact_region_id_defect_region"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifact")),
    )
    op.create_index(op.f("ix_artifact_inspection_id"), "artifact", ["inspection_id"], unique=False)
    op.create_index(op.f("ix_artifact_store_key"), "artifact", ["store_key"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_artifact_store_key"), table_name="artifact")
    op.drop_index(op.f("ix_artifact_inspection_id"), table_name="artifact")
    op.drop_table("artifact")
    op.drop_index(op.f("ix_training_set_item_inspection_id"), table_name="training_set_item")
    op.drop_table("training_set_item")
    op.drop_index(op.f("ix_operator_label_user_id"), table_name="operator_label")
    op.drop_index(op.f("ix_operator_label_inspection_id_user_id_id"), table_name="operator_label")
    op.drop_table("operator_label")
    op.drop_index(op.f("ix_defect_region_inspection_id"), table_name="defect_region")
    op.drop_index(op.f("ix_defect_region_defect_type_id"), table_name="defect_region")
    op.drop_table("defect_region")
    op.drop_index(
        op.f("ix_inspection_station_id_has_unknown_norm_score_id"), table_name="inspection"
    )
    op.drop_index(op.f("ix_inspection_station_id_captured_at"), table_name="inspection")
    op.drop_index(op.f("ix_inspection_model_version_id"), table_name="inspection")
    op.drop_index(op.f("ix_inspection_has_unknown_norm_score_id"), table_name="inspection")
    op.drop_index(op.f("ix_inspection_captured_at"), table_name="inspection")
    op.drop_table("inspection")
    if not _is_sqlite():
        op.drop_constraint(op.f(_CYCLE_FK), "retrain_job", type_="foreignkey")
    op.drop_index(
        "uq_model_version_one_active_per_station",
        table_name="model_version",
        sqlite_where=sa.text("status = 'active'"),
        postgresql_where=sa.text("status = 'active'"),
    )
    op.drop_index(op.f("ix_model_version_station_id"), table_name="model_version")
    op.drop_table("model_version")
    op.drop_index(op.f("ix_retrain_job_status_created_at"), table_name="retrain_job")
    op.drop_index(op.f("ix_retrain_job_station_id"), table_name="retrain_job")
    op.drop_table("retrain_job")
    op.drop_table("camera")
    op.drop_index(op.f("ix_station_line_id"), table_name="station")
    op.drop_table("station")
    op.drop_index(op.f("ix_audit_log_entity_type_entity_id"), table_name="audit_log")
    op.drop_index(op.f("ix_audit_log_at"), table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("users")
    op.drop_table("line")
    op.drop_table("defect_type")
