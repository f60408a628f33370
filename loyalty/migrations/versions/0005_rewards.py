"""Perks, the rewards catalogue and claims.

Revision ID: 0005_rewards
Revises: 0004_tiers
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005_rewards"
down_revision = "0004_tiers"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "rewards",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("points_cost", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("percent", sa.Integer(), nullable=True),
        sa.Column("sku", sa.String(length=100), nullable=True),
        sa.Column("tier_codes", JSON, nullable=False),
        sa.Column("stock", sa.Integer(), nullable=True),
        sa.Column("per_member_limit", sa.Integer(), nullable=True),
        sa.Column("available_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("available_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("coupon_valid_days", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('fixed_discount', 'percentage_discount', 'free_product', 'custom')",
            name=op.f("ck_rewards_kind"),
        ),
        sa.CheckConstraint("points_cost > 0", name=op.f("ck_rewards_points_cost")),
        sa.CheckConstraint("amount IS NULL OR amount > 0", name=op.f("ck_rewards_amount")),
        sa.CheckConstraint(
            "(amount IS NULL) = (currency IS NULL)", name=op.f("ck_rewards_amount_currency")
        ),
        sa.CheckConstraint(
            "percent IS NULL OR percent BETWEEN 1 AND 100", name=op.f("ck_rewards_percent")
        ),
        sa.CheckConstraint(
            "kind <> 'fixed_discount' OR amount IS NOT NULL",
            name=op.f("ck_rewards_fixed_discount_amount"),
        ),
        sa.CheckConstraint(
            "kind <> 'percentage_discount' OR percent IS NOT NULL",
            name=op.f("ck_rewards_percentage_percent"),
        ),
        sa.CheckConstraint(
            "kind <> 'free_product' OR sku IS NOT NULL", name=op.f("ck_rewards_free_product_sku")
        ),
        sa.CheckConstraint("stock IS NULL OR stock >= 0", name=op.f("ck_rewards_stock")),
        sa.CheckConstraint(
            "per_member_limit IS NULL OR per_member_limit > 0", name=op.f("ck_rewards_limit")
        ),
        sa.CheckConstraint(
            "coupon_valid_days BETWEEN 1 AND 3650", name=op.f("ck_rewards_coupon_valid_days")
        ),
        sa.CheckConstraint(
            "available_from IS NULL OR available_until IS NULL OR available_until > available_from",
            name=op.f("ck_rewards_window"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rewards")),
    )
    op.create_table(
        "perks",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("tier_codes", JSON, nullable=False),
        sa.Column("percent", sa.Integer(), nullable=True),
        sa.Column("bonus_points", sa.BigInteger(), nullable=True),
        sa.Column("reward_id", sa.String(length=40), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('free_shipping', 'birthday_gift', 'early_access', 'exclusive_discount', "
            "'custom')",
            name=op.f("ck_perks_kind"),
        ),
        sa.CheckConstraint(
            "percent IS NULL OR percent BETWEEN 1 AND 100", name=op.f("ck_perks_percent")
        ),
        sa.CheckConstraint(
            "bonus_points IS NULL OR bonus_points > 0", name=op.f("ck_perks_bonus_points")
        ),
        sa.CheckConstraint(
            "kind <> 'exclusive_discount' OR percent IS NOT NULL",
            name=op.f("ck_perks_discount_percent"),
        ),
        sa.CheckConstraint(
            "kind <> 'birthday_gift' OR bonus_points IS NOT NULL OR reward_id IS NOT NULL",
            name=op.f("ck_perks_birthday_gift"),
        ),
        sa.ForeignKeyConstraint(
            ["reward_id"], ["rewards.id"], name=op.f("fk_perks_reward_id_rewards")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_perks")),
    )
    op.create_table(
        "reward_claims",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("reward_id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("redemption_id", sa.String(length=40), nullable=True),
        sa.Column("coupon_code", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=True),
        sa.Column("client_id", sa.String(length=40), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("points_returned", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "status IN ('issued', 'used', 'cancelled', 'expired')",
            name=op.f("ck_reward_claims_status"),
        ),
        sa.CheckConstraint("source IN ('purchase', 'gift')", name=op.f("ck_reward_claims_source")),
        sa.CheckConstraint(
            "(source = 'purchase' AND points > 0 AND redemption_id IS NOT NULL) OR "
            "(source = 'gift' AND points = 0 AND redemption_id IS NULL)",
            name=op.f("ck_reward_claims_paid"),
        ),
        sa.CheckConstraint(
            "(status = 'used') = (used_at IS NOT NULL)", name=op.f("ck_reward_claims_used")
        ),
        sa.CheckConstraint(
            "(status = 'cancelled') = (cancelled_at IS NOT NULL)",
            name=op.f("ck_reward_claims_cancelled"),
        ),
        sa.CheckConstraint("expires_at > created_at", name=op.f("ck_reward_claims_expiry")),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_reward_claims_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["redemption_id"],
            ["redemptions.id"],
            name=op.f("fk_reward_claims_redemption_id_redemptions"),
        ),
        sa.ForeignKeyConstraint(
            ["reward_id"], ["rewards.id"], name=op.f("fk_reward_claims_reward_id_rewards")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reward_claims")),
        sa.UniqueConstraint("coupon_code", name=op.f("uq_reward_claims_coupon_code")),
    )
    op.create_index(
        "ix_reward_claims_member_id_id", "reward_claims", ["member_id", "id"], unique=False
    )
    op.create_index(
        "ix_reward_claims_reward_id_member_id",
        "reward_claims",
        ["reward_id", "member_id"],
        unique=False,
    )
    op.create_index("ix_reward_claims_status_expires_at", "reward_claims", ["status", "expires_at"])
    op.create_table(
        "perk_grants",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("perk_id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=True),
        sa.Column("claim_id", sa.String(length=40), nullable=True),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("points IS NULL OR points > 0", name=op.f("ck_perk_grants_points")),
        sa.ForeignKeyConstraint(
            ["claim_id"], ["reward_claims.id"], name=op.f("fk_perk_grants_claim_id_reward_claims")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_perk_grants_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["perk_id"], ["perks.id"], name=op.f("fk_perk_grants_perk_id_perks")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_perk_grants")),
        sa.UniqueConstraint(
            "perk_id", "member_id", "year", name=op.f("uq_perk_grants_perk_id_member_id_year")
        ),
    )
    op.create_index("ix_perk_grants_member_id", "perk_grants", ["member_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_perk_grants_member_id", table_name="perk_grants")
    op.drop_table("perk_grants")
    op.drop_index("ix_reward_claims_status_expires_at", table_name="reward_claims")
    op.drop_index("ix_reward_claims_reward_id_member_id", table_name="reward_claims")
    op.drop_index("ix_reward_claims_member_id_id", table_name="reward_claims")
    op.drop_table("reward_claims")
    op.drop_table("perks")
    op.drop_table("rewards")
