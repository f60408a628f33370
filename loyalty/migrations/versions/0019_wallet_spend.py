"""Each wallet keeps its member's spend and order count (the money of their orders less
refunds, in major units, all currencies added; the orders not wholly refunded), updated with
the orders and refunds that change them, so that a badge or tier on all-time spend or orders
reads one row instead of adding up every order the member placed (under the member's lock, on
every order). Filled here from the orders.

On PostgreSQL the columns are added without rewriting the table (constant defaults); the
filling updates every wallet that has orders, in batches.

Revision ID: 0019_wallet_spend
Revises: 0018_lots_fillfactor
Create Date: 2026-12-05
"""

from __future__ import annotations

import decimal
from collections import defaultdict
from decimal import Decimal

import iso4217
import sqlalchemy as sa
from alembic import op

revision = "0019_wallet_spend"
down_revision = "0018_lots_fillfactor"
branch_labels = None
depends_on = None

BATCH = 5000


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    # Text on SQLite, whose numbers keep 15 significant digits (loyalty.db.ExactDecimal).
    # Each check is the column's own (SQLite adds it with the column and drops it with it;
    # a table-wide copy would take the wallets' references with it).
    for column, kind in (("spend", "TEXT" if sqlite else "NUMERIC"), ("order_count", "BIGINT")):
        op.execute(
            f"ALTER TABLE wallets ADD COLUMN {column} {kind} DEFAULT '0' NOT NULL"
            f" CONSTRAINT ck_wallets_{column} CHECK ({column} >= 0)"
        )
    _fill(op.get_bind(), sqlite)


def _fill(connection: sa.Connection, sqlite: bool) -> None:
    orders = sa.table(
        "orders",
        sa.column("wallet_id", sa.String),
        sa.column("currency", sa.String),
        sa.column("total", sa.BigInteger),
        sa.column("amount_refunded", sa.BigInteger),
    )
    rows = connection.execute(
        sa.select(
            orders.c.wallet_id,
            orders.c.currency,
            sa.func.sum(orders.c.total - orders.c.amount_refunded),
            sa.func.count().filter(orders.c.amount_refunded < orders.c.total),
        ).group_by(orders.c.wallet_id, orders.c.currency)
    )
    spend: dict[str, Decimal] = defaultdict(Decimal)
    counted: dict[str, int] = defaultdict(int)
    with decimal.localcontext(decimal.Context(prec=60)):
        for wallet_id, currency, money, count in rows:
            spend[wallet_id] += Decimal(int(money or 0)).scaleb(-_exponent(currency))
            counted[wallet_id] += int(count or 0)
    wallets = sa.table(
        "wallets",
        sa.column("id", sa.String),
        sa.column("spend", sa.Text if sqlite else sa.Numeric),
        sa.column("order_count", sa.BigInteger),
    )
    update = (
        sa.update(wallets)
        .where(wallets.c.id == sa.bindparam("wallet_id"))
        .values(spend=sa.bindparam("spend"), order_count=sa.bindparam("order_count"))
    )
    values = [
        {
            "wallet_id": wallet_id,
            "spend": str(spend[wallet_id]) if sqlite else spend[wallet_id],
            "order_count": counted[wallet_id],
        }
        for wallet_id in spend
    ]
    for start in range(0, len(values), BATCH):
        connection.execute(update, values[start : start + BATCH])


def _exponent(currency: str) -> int:
    """The currency's minor-unit exponent, as orders were counted (no minor unit: 0)."""
    try:
        return iso4217.Currency(currency.upper()).exponent or 0
    except (ValueError, KeyError):
        return 0


def downgrade() -> None:
    for column in ("order_count", "spend"):
        op.drop_column("wallets", column)  # and its check with it
