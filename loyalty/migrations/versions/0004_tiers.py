"""Tiers: ladder, policy, members' tiers and tier history.

Revision ID: 0004_tiers
Revises: 0003_audit_and_earning
Create Date: 2026-11-22
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0004_tiers"
down_revision = "0003_audit_and_earning"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tiers",
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("threshold", sa.BigInteger(), nullable=False),
        sa.Column("retain_threshold", sa.BigInteger(), nullable=True),
        sa.Column("benefits", sa.String(length=2000), nullable=True),
        sa.Column("points_multiplier", sa.Numeric(precision=6, scale=4), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("threshold >= 0", name=op.f("ck_tiers_threshold")),
        sa.CheckConstraint(
            "retain_threshold IS NULL OR (retain_threshold >= 0 AND retain_threshold <= threshold)",
            name=op.f("ck_tiers_retain_threshold"),
        ),
        sa.CheckConstraint("points_multiplier >= 1", name=op.f("ck_tiers_points_multiplier")),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_tiers")),
        sa.UniqueConstraint("rank", name=op.f("uq_tiers_rank")),
    )
    op.create_table(
        "tier_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(length=16), nullable=False),
        sa.Column("qualification_window", sa.String(length=32), nullable=False),
        sa.Column("grace_days", sa.Integer(), nullable=False),
        sa.Column("downgrade", sa.String(length=16), nullable=False),
        sa.Column("ladder_version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.CheckConstraint("id = 1", name=op.f("ck_tier_settings_single_row")),
        sa.CheckConstraint(
            "metric IN ('points', 'spend', 'orders')", name=op.f("ck_tier_settings_metric")
        ),
        sa.CheckConstraint(
            "qualification_window IN ('lifetime', 'rolling_12_months', 'calendar_year')",
            name=op.f("ck_tier_settings_window"),
        ),
        sa.CheckConstraint(
            "grace_days BETWEEN 0 AND 365", name=op.f("ck_tier_settings_grace_days")
        ),
        sa.CheckConstraint(
            "downgrade IN ('one_step', 'recompute')", name=op.f("ck_tier_settings_downgrade")
        ),
        sa.CheckConstraint("ladder_version >= 1", name=op.f("ck_tier_settings_ladder_version")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tier_settings")),
    )
    op.create_table(
        "member_tiers",
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("tier_code", sa.String(length=32), nullable=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("review_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("manual_code", sa.String(length=32), nullable=True),
        sa.Column("manual_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("manual_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("manual_reason", sa.String(length=500), nullable=True),
        sa.Column("manual_by", sa.String(length=64), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ladder_version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "manual_code IS NULL OR (manual_since IS NOT NULL AND manual_reason IS NOT NULL)",
            name=op.f("ck_member_tiers_manual"),
        ),
        sa.CheckConstraint(
            "manual_until IS NULL OR manual_code IS NOT NULL",
            name=op.f("ck_member_tiers_manual_until"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_member_tiers_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["tier_code"], ["tiers.code"], name=op.f("fk_member_tiers_tier_code_tiers")
        ),
        sa.ForeignKeyConstraint(
            ["manual_code"], ["tiers.code"], name=op.f("fk_member_tiers_manual_code_tiers")
        ),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_member_tiers")),
    )
    op.create_index("ix_member_tiers_due_at", "member_tiers", ["due_at"], unique=False)
    op.create_index(
        "ix_member_tiers_ladder_version", "member_tiers", ["ladder_version"], unique=False
    )
    op.create_index("ix_member_tiers_tier_code", "member_tiers", ["tier_code"], unique=False)
    op.create_index("ix_member_tiers_manual_code", "member_tiers", ["manual_code"], unique=False)
    op.create_table(
        "tier_history",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("from_code", sa.String(length=32), nullable=True),
        sa.Column("to_code", sa.String(length=32), nullable=True),
        sa.Column("metric_value", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            "kind IN ('upgrade', 'downgrade', 'renewal', 'manual', 'manual_ended')",
            name=op.f("ck_tier_history_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_tier_history_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tier_history")),
    )
    op.create_index(
        "ix_tier_history_member_id_id", "tier_history", ["member_id", "id"], unique=False
    )

    tier_settings = sa.table(
        "tier_settings",
        sa.column("id", sa.Integer()),
        sa.column("metric", sa.String()),
        sa.column("qualification_window", sa.String()),
        sa.column("grace_days", sa.Integer()),
        sa.column("downgrade", sa.String()),
        sa.column("ladder_version", sa.Integer()),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    op.bulk_insert(
        tier_settings,
        [
            {
                "id": 1,
                "metric": "points",
                "qualification_window": "lifetime",
                "grace_days": 0,
                "downgrade": "one_step",
                "ladder_version": 1,
                "updated_at": dt.datetime.now(dt.UTC),
            }
        ],
    )


def downgrade() -> None:
    op.drop_index("ix_tier_history_member_id_id", table_name="tier_history")
    op.drop_table("tier_history")
    op.drop_index("ix_member_tiers_manual_code", table_name="member_tiers")
    op.drop_index("ix_member_tiers_tier_code", table_name="member_tiers")
    op.drop_index("ix_member_tiers_ladder_version", table_name="member_tiers")
    op.drop_index("ix_member_tiers_due_at", table_name="member_tiers")
    op.drop_table("member_tiers")
    op.drop_table("tier_settings")
    op.drop_table("tiers")
