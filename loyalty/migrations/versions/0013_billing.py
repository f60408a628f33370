"""Stripe billing: customers linked to members, Stripe events recorded once, payments and
refunds as they became orders, subscriptions that pay for tiers, promotion codes that mirror
reward claims; a tier may be paid (its Stripe price) and a member's tier row carries the paid
tier it was granted; tier history gains the kinds ``paid`` and ``paid_ended``.

Revision ID: 0013_billing
Revises: 0012_config_version
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0013_billing"
down_revision = "0012_config_version"
branch_labels = None
depends_on = None

OLD_KINDS = "kind IN ('upgrade', 'downgrade', 'renewal', 'manual', 'manual_ended')"
NEW_KINDS = (
    "kind IN ('upgrade', 'downgrade', 'renewal', 'manual', 'manual_ended', 'paid', 'paid_ended')"
)
PAID = "paid_code IS NULL OR (paid_since IS NOT NULL AND paid_until IS NOT NULL)"


def upgrade() -> None:
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("waiting_for", sa.String(length=300), nullable=True),
        sa.Column("detail", sa.String(length=500), nullable=True),
        sa.Column(
            "payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('processed', 'ignored', 'deferred', 'review')",
            name=op.f("ck_stripe_events_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_events")),
    )
    op.create_index(
        "ix_stripe_events_status_created", "stripe_events", ["status", "created"], unique=False
    )
    op.create_index("ix_stripe_events_waiting_for", "stripe_events", ["waiting_for"], unique=False)
    op.create_table(
        "stripe_customers",
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "source IN ('api', 'metadata', 'checkout')", name=op.f("ck_stripe_customers_source")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_stripe_customers_member_id_members")
        ),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_stripe_customers")),
        sa.UniqueConstraint("member_id", name=op.f("uq_stripe_customers_member_id")),
    )
    op.create_table(
        "stripe_payments",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=True),
        sa.Column("customer_id", sa.String(length=255), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=True),
        sa.Column("detail", sa.String(length=500), nullable=True),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('accrued', 'unmatched', 'review')", name=op.f("ck_stripe_payments_status")
        ),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_stripe_payments_amount")),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_stripe_payments_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_payments")),
    )
    op.create_index(
        "ix_stripe_payments_customer_id", "stripe_payments", ["customer_id"], unique=False
    )
    op.create_index(
        "ix_stripe_payments_status_id", "stripe_payments", ["status", "id"], unique=False
    )
    op.create_table(
        "stripe_promotion_codes",
        sa.Column("claim_id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("amount_off", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("percent_off", sa.Integer(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("deactivate", sa.Boolean(), nullable=False),
        sa.Column("coupon_id", sa.String(length=255), nullable=True),
        sa.Column("promotion_code_id", sa.String(length=255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('creating', 'active', 'deactivating', 'inactive', 'failed')",
            name=op.f("ck_stripe_promotion_codes_status"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_stripe_promotion_codes_member_id_members")
        ),
        sa.PrimaryKeyConstraint("claim_id", name=op.f("pk_stripe_promotion_codes")),
        sa.UniqueConstraint(
            "promotion_code_id", name=op.f("uq_stripe_promotion_codes_promotion_code_id")
        ),
    )
    op.create_index(
        "ix_stripe_promotion_codes_status_next_attempt_at",
        "stripe_promotion_codes",
        ["status", "next_attempt_at"],
        unique=False,
    )
    op.create_table(
        "stripe_subscriptions",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=True),
        sa.Column("tier_code", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("current_period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        sa.Column("payment_failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("granted_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_stripe_subscriptions_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_subscriptions")),
    )
    op.create_index(
        "ix_stripe_subscriptions_member_id", "stripe_subscriptions", ["member_id"], unique=False
    )
    op.create_table(
        "stripe_refunds",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("payment_id", sa.String(length=255), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("amount_applied", sa.BigInteger(), nullable=False),
        sa.Column("points_reversed", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=True),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('reversed', 'review')", name=op.f("ck_stripe_refunds_status")
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["stripe_payments.id"],
            name=op.f("fk_stripe_refunds_payment_id_stripe_payments"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_refunds")),
    )
    op.create_index("ix_stripe_refunds_payment_id", "stripe_refunds", ["payment_id"], unique=False)
    with op.batch_alter_table("member_tiers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("paid_code", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("paid_since", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("paid_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("paid_reference", sa.String(length=255), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_member_tiers_paid_code_tiers"), "tiers", ["paid_code"], ["code"]
        )
        batch_op.create_check_constraint(batch_op.f("ck_member_tiers_paid"), PAID)
    with op.batch_alter_table("tiers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stripe_price_id", sa.String(length=255), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_tiers_stripe_price_id"), ["stripe_price_id"]
        )
    with op.batch_alter_table("tier_history", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_tier_history_kind"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_tier_history_kind"), NEW_KINDS)


def downgrade() -> None:
    op.execute("DELETE FROM tier_history WHERE kind IN ('paid', 'paid_ended')")
    with op.batch_alter_table("tier_history", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_tier_history_kind"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_tier_history_kind"), OLD_KINDS)
    with op.batch_alter_table("tiers", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_tiers_stripe_price_id"), type_="unique")
        batch_op.drop_column("stripe_price_id")
    with op.batch_alter_table("member_tiers", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_member_tiers_paid"), type_="check")
        batch_op.drop_constraint(batch_op.f("fk_member_tiers_paid_code_tiers"), type_="foreignkey")
        batch_op.drop_column("paid_reference")
        batch_op.drop_column("paid_until")
        batch_op.drop_column("paid_since")
        batch_op.drop_column("paid_code")
    op.drop_index("ix_stripe_refunds_payment_id", table_name="stripe_refunds")
    op.drop_table("stripe_refunds")
    op.drop_index("ix_stripe_subscriptions_member_id", table_name="stripe_subscriptions")
    op.drop_table("stripe_subscriptions")
    op.drop_index(
        "ix_stripe_promotion_codes_status_next_attempt_at", table_name="stripe_promotion_codes"
    )
    op.drop_table("stripe_promotion_codes")
    op.drop_index("ix_stripe_payments_status_id", table_name="stripe_payments")
    op.drop_index("ix_stripe_payments_customer_id", table_name="stripe_payments")
    op.drop_table("stripe_payments")
    op.drop_table("stripe_customers")
    op.drop_index("ix_stripe_events_waiting_for", table_name="stripe_events")
    op.drop_index("ix_stripe_events_status_created", table_name="stripe_events")
    op.drop_table("stripe_events")
