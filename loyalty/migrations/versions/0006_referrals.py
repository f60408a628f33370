"""Referrals: programme terms, referrals, rewards given and reviews.

Revision ID: 0006_referrals
Revises: 0005_rewards
Create Date: 2026-11-22
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0006_referrals"
down_revision = "0005_rewards"
branch_labels = None
depends_on = None

STATUSES = "'pending', 'qualified', 'rejected', 'held', 'clawed_back'"
REASONS = "'self_referral', 'same_email', 'same_payment_card', 'same_device', 'loop', " + (
    "'velocity', 'manual'"
)
OUTCOMES = "'rewarded', 'monthly_cap', 'total_cap', 'referrer_inactive', 'no_reward'"


def upgrade() -> None:
    settings = op.create_table(
        "referral_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("min_order_total", sa.BigInteger(), nullable=False),
        sa.Column("min_order_currency", sa.String(length=3), nullable=True),
        sa.Column("referrer_points", sa.BigInteger(), nullable=False),
        sa.Column("referrer_reward_id", sa.String(length=40), nullable=True),
        sa.Column("referee_points", sa.BigInteger(), nullable=False),
        sa.Column("referee_reward_id", sa.String(length=40), nullable=True),
        sa.Column("monthly_cap", sa.Integer(), nullable=True),
        sa.Column("total_cap", sa.Integer(), nullable=True),
        sa.Column("shared_tier_days", sa.Integer(), nullable=True),
        sa.Column("velocity_limit", sa.Integer(), nullable=True),
        sa.Column("link_template", sa.String(length=500), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.CheckConstraint("id = 1", name=op.f("ck_referral_settings_single_row")),
        sa.CheckConstraint(
            "min_order_total >= 0", name=op.f("ck_referral_settings_min_order_total")
        ),
        sa.CheckConstraint(
            "referrer_points >= 0 AND referee_points >= 0",
            name=op.f("ck_referral_settings_points"),
        ),
        sa.CheckConstraint(
            "monthly_cap IS NULL OR monthly_cap >= 0", name=op.f("ck_referral_settings_monthly_cap")
        ),
        sa.CheckConstraint(
            "total_cap IS NULL OR total_cap >= 0", name=op.f("ck_referral_settings_total_cap")
        ),
        sa.CheckConstraint(
            "shared_tier_days IS NULL OR shared_tier_days BETWEEN 1 AND 3650",
            name=op.f("ck_referral_settings_shared_tier_days"),
        ),
        sa.CheckConstraint(
            "velocity_limit IS NULL OR velocity_limit >= 1",
            name=op.f("ck_referral_settings_velocity_limit"),
        ),
        sa.ForeignKeyConstraint(
            ["referee_reward_id"],
            ["rewards.id"],
            name=op.f("fk_referral_settings_referee_reward_id_rewards"),
        ),
        sa.ForeignKeyConstraint(
            ["referrer_reward_id"],
            ["rewards.id"],
            name=op.f("fk_referral_settings_referrer_reward_id_rewards"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referral_settings")),
    )
    # Referrals start switched on but reward nothing until a manager sets the rewards.
    op.bulk_insert(
        settings,
        [
            {
                "id": 1,
                "enabled": True,
                "min_order_total": 0,
                "referrer_points": 0,
                "referee_points": 0,
                "updated_at": dt.datetime.now(dt.UTC),
            }
        ],
    )
    op.create_table(
        "referrals",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("referrer_id", sa.String(length=40), nullable=False),
        sa.Column("referee_id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("order_pk", sa.String(length=40), nullable=True),
        sa.Column("referrer_outcome", sa.String(length=32), nullable=True),
        sa.Column("referrer_points", sa.BigInteger(), nullable=False),
        sa.Column("referee_points", sa.BigInteger(), nullable=False),
        sa.Column("referrer_claim_id", sa.String(length=40), nullable=True),
        sa.Column("referee_claim_id", sa.String(length=40), nullable=True),
        sa.Column("referrer_points_clawed_back", sa.BigInteger(), nullable=False),
        sa.Column("referee_points_clawed_back", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("qualified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reviewed_by", sa.String(length=64), nullable=True),
        sa.Column("clawed_back_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"status IN ({STATUSES})", name=op.f("ck_referrals_status")),
        sa.CheckConstraint(
            f"reason IS NULL OR reason IN ({REASONS})", name=op.f("ck_referrals_reason")
        ),
        sa.CheckConstraint(
            f"referrer_outcome IS NULL OR referrer_outcome IN ({OUTCOMES})",
            name=op.f("ck_referrals_referrer_outcome"),
        ),
        sa.CheckConstraint("referrer_id <> referee_id", name=op.f("ck_referrals_not_self")),
        sa.CheckConstraint(
            "referrer_points >= 0 AND referee_points >= 0 AND "
            "referrer_points_clawed_back >= 0 AND referee_points_clawed_back >= 0",
            name=op.f("ck_referrals_points"),
        ),
        sa.CheckConstraint(
            "(status IN ('qualified', 'clawed_back')) = (qualified_at IS NOT NULL)",
            name=op.f("ck_referrals_qualified"),
        ),
        sa.CheckConstraint(
            "(status = 'clawed_back') = (clawed_back_at IS NOT NULL)",
            name=op.f("ck_referrals_clawed"),
        ),
        sa.ForeignKeyConstraint(
            ["order_pk"], ["orders.id"], name=op.f("fk_referrals_order_pk_orders")
        ),
        sa.ForeignKeyConstraint(
            ["referee_claim_id"],
            ["reward_claims.id"],
            name=op.f("fk_referrals_referee_claim_id_reward_claims"),
        ),
        sa.ForeignKeyConstraint(
            ["referee_id"], ["members.id"], name=op.f("fk_referrals_referee_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["referrer_claim_id"],
            ["reward_claims.id"],
            name=op.f("fk_referrals_referrer_claim_id_reward_claims"),
        ),
        sa.ForeignKeyConstraint(
            ["referrer_id"], ["members.id"], name=op.f("fk_referrals_referrer_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referrals")),
        sa.UniqueConstraint("order_pk", name=op.f("uq_referrals_order_pk")),
        sa.UniqueConstraint("referee_id", name=op.f("uq_referrals_referee_id")),
    )
    op.create_index("ix_referrals_referrer_id_id", "referrals", ["referrer_id", "id"])
    op.create_index("ix_referrals_status_id", "referrals", ["status", "id"])


def downgrade() -> None:
    op.drop_index("ix_referrals_status_id", table_name="referrals")
    op.drop_index("ix_referrals_referrer_id_id", table_name="referrals")
    op.drop_table("referrals")
    op.drop_table("referral_settings")
