"""Points ledger: settings, wallets, entries, lots, allocations, holds, orders, refunds,
redemptions and idempotency keys.

Revision ID: 0002_points_ledger
Revises: 0001_foundation
Create Date: 2026-11-22
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

APPEND_ONLY_TABLES = ("ledger_entries", "allocations")
revision = "0002_points_ledger"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("client_id", sa.String(length=40), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("content_type", sa.String(length=100), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(status_code IS NULL) = (body IS NULL)", name=op.f("ck_idempotency_keys_response")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint("client_id", "key", name=op.f("uq_idempotency_keys_client_id_key")),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index("ix_idempotency_keys_created_at", ["created_at"], unique=False)

    op.create_table(
        "program_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("earn_rate", sa.Numeric(precision=12, scale=4), nullable=False),
        sa.Column("rounding", sa.String(length=16), nullable=False),
        sa.Column("pending_days", sa.Integer(), nullable=False),
        sa.Column("expiry_policy", sa.String(length=16), nullable=False),
        sa.Column("expiry_months", sa.Integer(), nullable=False),
        sa.Column("expiry_period", sa.String(length=16), nullable=False),
        sa.Column("refund_policy", sa.String(length=16), nullable=False),
        sa.Column("hold_timeout_seconds", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            "expiry_period IN ('month', 'quarter', 'year')",
            name=op.f("ck_program_settings_expiry_period"),
        ),
        sa.CheckConstraint(
            "expiry_policy IN ('none', 'rolling', 'calendar', 'inactivity')",
            name=op.f("ck_program_settings_expiry_policy"),
        ),
        sa.CheckConstraint(
            "refund_policy IN ('within_balance', 'allow_negative')",
            name=op.f("ck_program_settings_refund_policy"),
        ),
        sa.CheckConstraint(
            "rounding IN ('floor', 'half_up', 'ceiling')", name=op.f("ck_program_settings_rounding")
        ),
        sa.CheckConstraint("earn_rate >= 0", name=op.f("ck_program_settings_earn_rate")),
        sa.CheckConstraint(
            "expiry_months BETWEEN 1 AND 1200", name=op.f("ck_program_settings_expiry_months")
        ),
        sa.CheckConstraint(
            "hold_timeout_seconds BETWEEN 60 AND 604800",
            name=op.f("ck_program_settings_hold_timeout"),
        ),
        sa.CheckConstraint("id = 1", name=op.f("ck_program_settings_single_row")),
        sa.CheckConstraint(
            "pending_days BETWEEN 0 AND 365", name=op.f("ck_program_settings_pending_days")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_program_settings")),
    )
    op.create_table(
        "wallets",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("available", sa.BigInteger(), nullable=False),
        sa.Column("pending", sa.BigInteger(), nullable=False),
        sa.Column("held", sa.BigInteger(), nullable=False),
        sa.Column("debt", sa.BigInteger(), nullable=False),
        sa.Column("lifetime_earned", sa.BigInteger(), nullable=False),
        sa.Column("last_activity_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "available >= 0 OR available = -debt", name=op.f("ck_wallets_available")
        ),
        sa.CheckConstraint("debt >= 0", name=op.f("ck_wallets_debt")),
        sa.CheckConstraint("held >= 0", name=op.f("ck_wallets_held")),
        sa.CheckConstraint("lifetime_earned >= 0", name=op.f("ck_wallets_lifetime_earned")),
        sa.CheckConstraint("pending >= 0", name=op.f("ck_wallets_pending")),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_wallets_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallets")),
        sa.UniqueConstraint("member_id", name=op.f("uq_wallets_member_id")),
    )
    with op.batch_alter_table("wallets", schema=None) as batch_op:
        batch_op.create_index("ix_wallets_next_due_at", ["next_due_at"], unique=False)

    op.create_table(
        "ledger_entries",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("wallet_id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("available_delta", sa.BigInteger(), nullable=False),
        sa.Column("pending_delta", sa.BigInteger(), nullable=False),
        sa.Column("held_delta", sa.BigInteger(), nullable=False),
        sa.Column("debt_delta", sa.BigInteger(), nullable=False),
        sa.Column("earned_delta", sa.BigInteger(), nullable=False),
        sa.Column("counter_account", sa.String(length=16), nullable=True),
        sa.Column("counter_amount", sa.BigInteger(), nullable=False),
        sa.Column("reference_type", sa.String(length=16), nullable=True),
        sa.Column("reference_id", sa.String(length=128), nullable=True),
        sa.Column("external_reference", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("actor", sa.String(length=64), nullable=True),
        sa.Column("balance_available", sa.BigInteger(), nullable=False),
        sa.Column("balance_pending", sa.BigInteger(), nullable=False),
        sa.Column("balance_held", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "counter_account IS NULL OR counter_account IN ('issuance', 'redemption', 'expiry', 'adjustment')",
            name=op.f("ck_ledger_entries_counter_account"),
        ),
        sa.CheckConstraint(
            "kind IN ('accrual', 'activation', 'redemption', 'reversal', 'adjustment', 'expiry', 'hold', 'capture', 'release', 'bonus', 'transfer')",
            name=op.f("ck_ledger_entries_kind"),
        ),
        sa.CheckConstraint(
            "available_delta + pending_delta + held_delta + counter_amount = 0",
            name=op.f("ck_ledger_entries_balanced"),
        ),
        sa.CheckConstraint(
            "counter_amount = 0 OR counter_account IS NOT NULL",
            name=op.f("ck_ledger_entries_counter"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_ledger_entries_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_ledger_entries_wallet_id_wallets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
    )
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_ledger_entries_reference", ["reference_type", "reference_id"], unique=False
        )
        batch_op.create_index("ix_ledger_entries_wallet_id_id", ["wallet_id", "id"], unique=False)
        batch_op.create_index(
            "uq_ledger_entries_expiry_lot",
            ["reference_id"],
            unique=True,
            postgresql_where=sa.text("kind = 'expiry'"),
            sqlite_where=sa.text("kind = 'expiry'"),
        )

    op.create_table(
        "holds",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("wallet_id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("client_id", sa.String(length=40), nullable=True),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=True),
        sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("captured_points", sa.BigInteger(), nullable=True),
        sa.Column("redemption_id", sa.String(length=40), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(status = 'captured') = (captured_points IS NOT NULL)",
            name=op.f("ck_holds_captured_points"),
        ),
        sa.CheckConstraint(
            "status IN ('held', 'captured', 'released', 'expired')", name=op.f("ck_holds_status")
        ),
        sa.CheckConstraint(
            "captured_points IS NULL OR (captured_points > 0 AND captured_points <= points)",
            name=op.f("ck_holds_captured_range"),
        ),
        sa.CheckConstraint("points > 0", name=op.f("ck_holds_points")),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["ledger_entries.id"], name=op.f("fk_holds_entry_id_ledger_entries")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_holds_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_holds_wallet_id_wallets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_holds")),
    )
    with op.batch_alter_table("holds", schema=None) as batch_op:
        batch_op.create_index("ix_holds_wallet_id_status", ["wallet_id", "status"], unique=False)

    op.create_table(
        "orders",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("client_id", sa.String(length=40), nullable=False),
        sa.Column("order_id", sa.String(length=128), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("wallet_id", sa.String(length=40), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column(
            "items", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("points_reversed", sa.BigInteger(), nullable=False),
        sa.Column("amount_refunded", sa.BigInteger(), nullable=False),
        sa.Column("activates_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "response", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "amount_refunded BETWEEN 0 AND total", name=op.f("ck_orders_amount_refunded")
        ),
        sa.CheckConstraint("points >= 0", name=op.f("ck_orders_points")),
        sa.CheckConstraint(
            "points_reversed BETWEEN 0 AND points", name=op.f("ck_orders_points_reversed")
        ),
        sa.CheckConstraint("total >= 0", name=op.f("ck_orders_total")),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["ledger_entries.id"], name=op.f("fk_orders_entry_id_ledger_entries")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_orders_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_orders_wallet_id_wallets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint("client_id", "order_id", name=op.f("uq_orders_client_id_order_id")),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index("ix_orders_member_id", ["member_id"], unique=False)

    op.create_table(
        "lots",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("wallet_id", sa.String(length=40), nullable=False),
        sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("order_pk", sa.String(length=40), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("activates_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_lots_amount")),
        sa.CheckConstraint(
            "expired_at IS NULL OR remaining = 0", name=op.f("ck_lots_expired_empty")
        ),
        sa.CheckConstraint(
            "remaining >= 0 AND remaining <= amount", name=op.f("ck_lots_remaining")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["ledger_entries.id"], name=op.f("fk_lots_entry_id_ledger_entries")
        ),
        sa.ForeignKeyConstraint(["order_pk"], ["orders.id"], name=op.f("fk_lots_order_pk_orders")),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_lots_wallet_id_wallets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lots")),
    )
    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.create_index("ix_lots_order_pk", ["order_pk"], unique=False)
        batch_op.create_index(
            "ix_lots_wallet_id_expires_at", ["wallet_id", "expires_at"], unique=False
        )

    op.create_table(
        "redemptions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("wallet_id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("client_id", sa.String(length=40), nullable=True),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("hold_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("points > 0", name=op.f("ck_redemptions_points")),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["ledger_entries.id"], name=op.f("fk_redemptions_entry_id_ledger_entries")
        ),
        sa.ForeignKeyConstraint(
            ["hold_id"], ["holds.id"], name=op.f("fk_redemptions_hold_id_holds")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_redemptions_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_redemptions_wallet_id_wallets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_redemptions")),
    )
    op.create_table(
        "refunds",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("client_id", sa.String(length=40), nullable=False),
        sa.Column("refund_id", sa.String(length=128), nullable=False),
        sa.Column("order_pk", sa.String(length=40), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column(
            "items", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("points_reversed", sa.BigInteger(), nullable=False),
        sa.Column("shortfall", sa.BigInteger(), nullable=False),
        sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "response", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_refunds_amount")),
        sa.CheckConstraint("points_reversed >= 0", name=op.f("ck_refunds_points_reversed")),
        sa.CheckConstraint(
            "shortfall >= 0 AND shortfall <= points_reversed", name=op.f("ck_refunds_shortfall")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["ledger_entries.id"], name=op.f("fk_refunds_entry_id_ledger_entries")
        ),
        sa.ForeignKeyConstraint(
            ["order_pk"], ["orders.id"], name=op.f("fk_refunds_order_pk_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refunds")),
        sa.UniqueConstraint("client_id", "refund_id", name=op.f("uq_refunds_client_id_refund_id")),
    )
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.create_index("ix_refunds_order_pk", ["order_pk"], unique=False)

    op.create_table(
        "allocations",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("lot_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("points <> 0", name=op.f("ck_allocations_points")),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["ledger_entries.id"], name=op.f("fk_allocations_entry_id_ledger_entries")
        ),
        sa.ForeignKeyConstraint(["lot_id"], ["lots.id"], name=op.f("fk_allocations_lot_id_lots")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_allocations")),
    )
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.create_index("ix_allocations_entry_id", ["entry_id"], unique=False)
        batch_op.create_index("ix_allocations_lot_id", ["lot_id"], unique=False)

    settings = sa.table(
        "program_settings",
        sa.column("id", sa.Integer),
        sa.column("earn_rate", sa.Numeric),
        sa.column("rounding", sa.String),
        sa.column("pending_days", sa.Integer),
        sa.column("expiry_policy", sa.String),
        sa.column("expiry_months", sa.Integer),
        sa.column("expiry_period", sa.String),
        sa.column("refund_policy", sa.String),
        sa.column("hold_timeout_seconds", sa.Integer),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    # The default programme: 1 point per major currency unit, 14 days pending, points valid
    # for 36 months, refunds within the balance, 15-minute holds.
    op.bulk_insert(
        settings,
        [
            {
                "id": 1,
                "earn_rate": 1,
                "rounding": "floor",
                "pending_days": 14,
                "expiry_policy": "rolling",
                "expiry_months": 36,
                "expiry_period": "year",
                "refund_policy": "within_balance",
                "hold_timeout_seconds": 900,
                "updated_at": dt.datetime.now(dt.UTC),
            }
        ],
    )
    _create_append_only_guards()


def _create_append_only_guards() -> None:
    """History is never edited: refuse UPDATE and DELETE on entries and allocations."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'ledger history is append-only: % on % refused',
                    TG_OP, TG_TABLE_NAME;
            END $$
            """
        )
        for table in APPEND_ONLY_TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION ledger_append_only()"
            )
        return
    for table in APPEND_ONLY_TABLES:
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
                "BEGIN SELECT RAISE(ABORT, 'ledger history is append-only'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in APPEND_ONLY_TABLES:
            op.execute(f"DROP TRIGGER {table}_append_only ON {table}")
        op.execute("DROP FUNCTION ledger_append_only()")
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.drop_index("ix_allocations_lot_id")
        batch_op.drop_index("ix_allocations_entry_id")

    op.drop_table("allocations")
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_index("ix_refunds_order_pk")

    op.drop_table("refunds")
    op.drop_table("redemptions")
    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.drop_index("ix_lots_wallet_id_expires_at")
        batch_op.drop_index("ix_lots_order_pk")

    op.drop_table("lots")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_member_id")

    op.drop_table("orders")
    with op.batch_alter_table("holds", schema=None) as batch_op:
        batch_op.drop_index("ix_holds_wallet_id_status")

    op.drop_table("holds")
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_ledger_entries_expiry_lot",
            postgresql_where=sa.text("kind = 'expiry'"),
            sqlite_where=sa.text("kind = 'expiry'"),
        )
        batch_op.drop_index("ix_ledger_entries_wallet_id_id")
        batch_op.drop_index("ix_ledger_entries_reference")

    op.drop_table("ledger_entries")
    with op.batch_alter_table("wallets", schema=None) as batch_op:
        batch_op.drop_index("ix_wallets_next_due_at")

    op.drop_table("wallets")
    op.drop_table("program_settings")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_idempotency_keys_created_at")

    op.drop_table("idempotency_keys")
