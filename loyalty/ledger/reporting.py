"""The ledger's tables as reports may read them: read-only selects with named columns, which
the analytics (above) composes into set-based queries. Nothing here writes or commits."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import CompoundSelect, Select, and_, func, or_, select, union

from loyalty.ledger.models import Entry, Lot, Order, Redemption, Refund, Wallet


def orders() -> Select[*tuple[Any, ...]]:
    """Every order: ``id``, ``member_id``, ``placed_at``, ``total`` and ``amount_refunded``
    (minor units), ``currency``, ``points``, ``points_reversed``, ``breakdown`` and
    ``counted`` (true unless refunded in full: a refunded order is not a purchase)."""
    return select(
        Order.id,
        Order.member_id,
        Order.placed_at,
        Order.total,
        Order.amount_refunded,
        Order.currency,
        Order.points,
        Order.points_reversed,
        Order.breakdown,
        or_(Order.amount_refunded < Order.total, Order.total == 0).label("counted"),
    )


def counted_orders() -> Select[*tuple[Any, ...]]:
    """The orders that count as purchases (`orders` with ``counted``)."""
    return orders().where(or_(Order.amount_refunded < Order.total, Order.total == 0))


def order_totals_by_currency() -> Select[str, str, int, int]:
    """Each wallet's orders by currency: money less refunds, and how many are not wholly
    refunded (`rules.orders_kept` adds them up; whole numbers here, exact on every database)."""
    return select(
        Order.wallet_id,
        Order.currency,
        func.coalesce(func.sum(Order.total - Order.amount_refunded), 0),
        func.count().filter(Order.amount_refunded < Order.total),
    ).group_by(Order.wallet_id, Order.currency)


def redemptions() -> Select[*tuple[Any, ...]]:
    """Points spent: ``member_id``, ``created_at``, ``points``, ``returned_at``."""
    return select(
        Redemption.member_id, Redemption.created_at, Redemption.points, Redemption.returned_at
    )


def entries() -> Select[*tuple[Any, ...]]:
    """Every entry: ``member_id``, ``kind``, ``created_at``, ``counter_account``,
    ``counter_amount`` (what the counter-account gained: issuance negative when points were
    credited), ``earned_delta``, ``available_delta``, ``pending_delta``, ``held_delta``."""
    return select(
        Entry.member_id,
        Entry.kind,
        Entry.created_at,
        Entry.counter_account,
        Entry.counter_amount,
        Entry.earned_delta,
        Entry.available_delta,
        Entry.pending_delta,
        Entry.held_delta,
    )


def wallets() -> Select[*tuple[Any, ...]]:
    """Balances: ``member_id``, ``available``, ``pending``, ``held``, ``debt``,
    ``lifetime_earned``."""
    return select(
        Wallet.member_id,
        Wallet.available,
        Wallet.pending,
        Wallet.held,
        Wallet.debt,
        Wallet.lifetime_earned,
    )


def unspent_lots() -> Select[*tuple[Any, ...]]:
    """Lots with points left: ``member_id``, ``remaining``, ``activates_at``, ``expires_at``."""
    return (
        select(Wallet.member_id, Lot.remaining, Lot.activates_at, Lot.expires_at)
        .join(Wallet, Wallet.id == Lot.wallet_id)
        .where(and_(Lot.remaining > 0, Lot.expired_at.is_(None)))
    )


def late_order_members(since: dt.datetime, before: dt.datetime) -> CompoundSelect:
    """``member_id`` of the members whose orders placed before ``before`` changed in rows
    recorded since ``since``: orders back-filled before it, refunds of such orders."""
    return union(
        select(Order.member_id).where(Order.created_at >= since, Order.placed_at < before),
        select(Order.member_id)
        .join(Refund, Refund.order_pk == Order.id)
        .where(Refund.created_at >= since, Order.placed_at < before),
    )


def late_activity_members(since: dt.datetime, before: dt.datetime) -> CompoundSelect:
    """``member_id`` of the members whose purchases or redemptions before ``before`` changed
    in rows recorded since ``since``: orders placed before it (back-filled), refunds of such
    orders, redemptions made before it (committed late)."""
    return union(
        select(Order.member_id).where(Order.created_at >= since, Order.placed_at < before),
        select(Order.member_id)
        .join(Refund, Refund.order_pk == Order.id)
        .where(Refund.created_at >= since, Order.placed_at < before),
        select(Redemption.member_id).where(
            Redemption.created_at >= since, Redemption.created_at < before
        ),
    )
