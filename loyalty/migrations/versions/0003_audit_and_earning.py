"""Audit trail and earning rules: audit records, earning settings (seeded with no limits),
product multipliers, campaigns, the order's earning breakdown and returned redemptions.

Revision ID: 0003_audit_and_earning
Revises: 0002_points_ledger
Create Date: 2026-11-22
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003_audit_and_earning"
down_revision = "0002_points_ledger"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_records",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("entity_type", sa.String(length=32), nullable=False),
        sa.Column("entity_id", sa.String(length=128), nullable=False),
        sa.Column(
            "before", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column("after", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_records")),
    )
    op.create_index("ix_audit_records_actor", "audit_records", ["actor"], unique=False)
    op.create_index(
        "ix_audit_records_entity", "audit_records", ["entity_type", "entity_id"], unique=False
    )
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("target", sa.String(length=16), nullable=False),
        sa.Column(
            "target_values",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column("multiplier", sa.Numeric(precision=8, scale=4), nullable=True),
        sa.Column("bonus_points", sa.BigInteger(), nullable=True),
        sa.Column("budget", sa.BigInteger(), nullable=True),
        sa.Column("spent", sa.BigInteger(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "target IN ('all', 'tiers', 'stages', 'members')", name=op.f("ck_campaigns_target")
        ),
        sa.CheckConstraint(
            "bonus_points IS NULL OR bonus_points > 0", name=op.f("ck_campaigns_bonus_points")
        ),
        sa.CheckConstraint("budget IS NULL OR budget > 0", name=op.f("ck_campaigns_budget")),
        sa.CheckConstraint("ends_at > starts_at", name=op.f("ck_campaigns_window")),
        sa.CheckConstraint(
            "multiplier IS NOT NULL OR bonus_points IS NOT NULL", name=op.f("ck_campaigns_reward")
        ),
        sa.CheckConstraint(
            "multiplier IS NULL OR multiplier > 1", name=op.f("ck_campaigns_multiplier")
        ),
        sa.CheckConstraint(
            "spent >= 0 AND (budget IS NULL OR spent <= budget)", name=op.f("ck_campaigns_spent")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
    )
    op.create_index("ix_campaigns_window", "campaigns", ["starts_at", "ends_at"], unique=False)
    op.create_table(
        "earning_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("minimum_order_total", sa.BigInteger(), nullable=True),
        sa.Column("minimum_order_currency", sa.String(length=3), nullable=True),
        sa.Column(
            "excluded_categories",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column("daily_cap", sa.BigInteger(), nullable=True),
        sa.Column("monthly_cap", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            "(minimum_order_total IS NULL) = (minimum_order_currency IS NULL)",
            name=op.f("ck_earning_settings_minimum_currency"),
        ),
        sa.CheckConstraint(
            "daily_cap IS NULL OR daily_cap > 0", name=op.f("ck_earning_settings_daily_cap")
        ),
        sa.CheckConstraint("id = 1", name=op.f("ck_earning_settings_single_row")),
        sa.CheckConstraint(
            "minimum_order_total IS NULL OR minimum_order_total > 0",
            name=op.f("ck_earning_settings_minimum"),
        ),
        sa.CheckConstraint(
            "monthly_cap IS NULL OR monthly_cap > 0", name=op.f("ck_earning_settings_monthly_cap")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_earning_settings")),
    )
    op.create_table(
        "product_multipliers",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("match", sa.String(length=100), nullable=False),
        sa.Column("multiplier", sa.Numeric(precision=8, scale=4), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "scope IN ('category', 'sku')", name=op.f("ck_product_multipliers_scope")
        ),
        sa.CheckConstraint("multiplier > 0", name=op.f("ck_product_multipliers_multiplier")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_product_multipliers")),
        sa.UniqueConstraint("scope", "match", name=op.f("uq_product_multipliers_scope_match")),
    )
    # Orders reported before earning rules have no breakdown: an empty list.
    op.add_column(
        "orders",
        sa.Column(
            "breakdown",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
            server_default=sa.text("'[]'"),
        ),
    )
    op.add_column(
        "redemptions", sa.Column("returned_at", sa.DateTime(timezone=True), nullable=True)
    )

    earning_settings = sa.table(
        "earning_settings",
        sa.column("id", sa.Integer()),
        sa.column("excluded_categories", sa.JSON()),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    op.bulk_insert(
        earning_settings,
        [{"id": 1, "excluded_categories": [], "updated_at": dt.datetime.now(dt.UTC)}],
    )


def downgrade() -> None:
    op.drop_column("redemptions", "returned_at")
    op.drop_column("orders", "breakdown")
    op.drop_table("product_multipliers")
    op.drop_table("earning_settings")
    op.drop_index("ix_campaigns_window", table_name="campaigns")
    op.drop_table("campaigns")
    op.drop_index("ix_audit_records_entity", table_name="audit_records")
    op.drop_index("ix_audit_records_actor", table_name="audit_records")
    op.drop_table("audit_records")
