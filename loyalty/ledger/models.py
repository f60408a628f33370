"""Tables of the points core. Only `loyalty.ledger.service` writes them.

Points and money are integers. Entries and allocations are append-only (database triggers
refuse UPDATE and DELETE); every entry balances against its counter-account (a CHECK).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from loyalty import configcache
from loyalty.db import Base, ExactDecimal, JSONDocument, UTCDateTime, one_of, utcnow
from loyalty.ledger.rules import (
    CALENDAR_PERIODS,
    EXPIRY_POLICIES,
    HOLD_STATUSES,
    REFUND_POLICIES,
    ROUNDING_MODES,
)

# SQLite only auto-increments INTEGER PRIMARY KEY columns.
BigId = BigInteger().with_variant(Integer(), "sqlite")

ENTRY_KINDS = (
    "accrual",
    "activation",
    "redemption",
    "reversal",
    "adjustment",
    "expiry",
    "hold",
    "capture",
    "release",
    "bonus",
    "transfer",
)
COUNTER_ACCOUNTS = ("issuance", "redemption", "expiry", "adjustment")


class ProgramSettings(Base):
    """The programme's core settings: one row, created by the migration with the defaults."""

    __tablename__ = "program_settings"
    __table_args__ = (
        CheckConstraint("id = 1", name="single_row"),
        CheckConstraint("earn_rate >= 0", name="earn_rate"),
        CheckConstraint(one_of("rounding", tuple(ROUNDING_MODES)), name="rounding"),
        CheckConstraint("pending_days BETWEEN 0 AND 365", name="pending_days"),
        CheckConstraint(one_of("expiry_policy", EXPIRY_POLICIES), name="expiry_policy"),
        CheckConstraint("expiry_months BETWEEN 1 AND 1200", name="expiry_months"),
        CheckConstraint(one_of("expiry_period", CALENDAR_PERIODS), name="expiry_period"),
        CheckConstraint(one_of("refund_policy", REFUND_POLICIES), name="refund_policy"),
        CheckConstraint("hold_timeout_seconds BETWEEN 60 AND 604800", name="hold_timeout"),
        CheckConstraint("max_order_age_days BETWEEN 1 AND 3650", name="max_order_age_days"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    earn_rate: Mapped[Decimal] = mapped_column(Numeric(12, 4), default=Decimal(1))
    rounding: Mapped[str] = mapped_column(String(16), default="floor")
    pending_days: Mapped[int] = mapped_column(Integer, default=14)
    expiry_policy: Mapped[str] = mapped_column(String(16), default="rolling")
    expiry_months: Mapped[int] = mapped_column(Integer, default=36)
    expiry_period: Mapped[str] = mapped_column(String(16), default="year")
    refund_policy: Mapped[str] = mapped_column(String(16), default="within_balance")
    hold_timeout_seconds: Mapped[int] = mapped_column(Integer, default=900)
    # The programme's time zone (IANA name): calendar periods and expiry days end at its
    # midnight.
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # Orders and events older than this are refused (history comes in through the import).
    max_order_age_days: Mapped[int] = mapped_column(Integer, default=30)
    # While the inactivity policy is being switched on (or its months changed), wallets are
    # marked due in batches of member ids after this one; NULL when no sweep is pending.
    due_sweep_after: Mapped[str | None] = mapped_column(String(40))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(64))


class Wallet(Base):
    """A member's points account, with balances cached from its entries."""

    __tablename__ = "wallets"
    __table_args__ = (
        CheckConstraint("pending >= 0", name="pending"),
        CheckConstraint("held >= 0", name="held"),
        CheckConstraint("debt >= 0", name="debt"),
        CheckConstraint("lifetime_earned >= 0", name="lifetime_earned"),
        CheckConstraint("spend >= 0", name="spend"),
        CheckConstraint("order_count >= 0", name="order_count"),
        # Points go below zero only as debt, and only once every active lot is spent.
        CheckConstraint("available >= 0 OR available = -debt", name="available"),
        Index("ix_wallets_next_due_at", "next_due_at"),
        # Lifecycle triggers walk wallets by last activity (members inactive since when).
        Index("ix_wallets_last_activity_at", "last_activity_at", "member_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"), unique=True)
    available: Mapped[int] = mapped_column(BigInteger, default=0)
    pending: Mapped[int] = mapped_column(BigInteger, default=0)
    held: Mapped[int] = mapped_column(BigInteger, default=0)
    debt: Mapped[int] = mapped_column(BigInteger, default=0)
    lifetime_earned: Mapped[int] = mapped_column(BigInteger, default=0)
    # The member's orders, kept with them (invariant 8) so that badges and tiers read them
    # without adding up a member's whole history: their money less refunds, in major units,
    # all currencies added, and how many are not wholly refunded (orders of total 0 aside).
    spend: Mapped[Decimal] = mapped_column(ExactDecimal, default=Decimal(0), server_default="0")
    order_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    last_activity_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The earliest moment something is due (activation, expiry, hold timeout); the job and
    # the next change to the wallet settle what is due.
    next_due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Entry(Base):
    """One movement of points. Never updated or deleted; corrections are new entries."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint(one_of("kind", ENTRY_KINDS), name="kind"),
        CheckConstraint(
            "counter_account IS NULL OR " + one_of("counter_account", COUNTER_ACCOUNTS),
            name="counter_account",
        ),
        # Double entry: what the member's buckets gain, the counter-account loses.
        CheckConstraint(
            "available_delta + pending_delta + held_delta + counter_amount = 0", name="balanced"
        ),
        CheckConstraint("counter_amount = 0 OR counter_account IS NOT NULL", name="counter"),
        Index("ix_ledger_entries_wallet_id_id", "wallet_id", "id"),
        Index("ix_ledger_entries_reference", "reference_type", "reference_id"),
        # Analytics: points issued, redeemed and expired over a period.
        Index("ix_ledger_entries_created_at", "created_at"),
        Index(
            "uq_ledger_entries_expiry_lot",
            "reference_id",
            unique=True,
            postgresql_where=text("kind = 'expiry'"),
            sqlite_where=text("kind = 'expiry'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"))
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    kind: Mapped[str] = mapped_column(String(16))
    points: Mapped[int] = mapped_column(BigInteger)
    available_delta: Mapped[int] = mapped_column(BigInteger, default=0)
    pending_delta: Mapped[int] = mapped_column(BigInteger, default=0)
    held_delta: Mapped[int] = mapped_column(BigInteger, default=0)
    debt_delta: Mapped[int] = mapped_column(BigInteger, default=0)
    earned_delta: Mapped[int] = mapped_column(BigInteger, default=0)
    counter_account: Mapped[str | None] = mapped_column(String(16))
    counter_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    reference_type: Mapped[str | None] = mapped_column(String(16))
    reference_id: Mapped[str | None] = mapped_column(String(128))
    external_reference: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(String(500))
    actor: Mapped[str | None] = mapped_column(String(64))
    # The refund this entry carries out: its reversal, the transfers that made room for it,
    # and the points taken back later when some of the order's points came back.
    refund_pk: Mapped[str | None] = mapped_column(ForeignKey("refunds.id", use_alter=True))
    balance_available: Mapped[int] = mapped_column(BigInteger)
    balance_pending: Mapped[int] = mapped_column(BigInteger)
    balance_held: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Lot(Base):
    """Points credited together: pending until ``activates_at``, spendable until ``expires_at``."""

    __tablename__ = "lots"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount"),
        CheckConstraint("remaining >= 0 AND remaining <= amount", name="remaining"),
        CheckConstraint("expired_at IS NULL OR remaining = 0", name="expired_empty"),
        Index("ix_lots_wallet_id_expires_at", "wallet_id", "expires_at"),
        Index("ix_lots_order_pk", "order_pk"),
        # Lifecycle triggers walk lots by expiry moment (points expiring soon).
        Index("ix_lots_expires_at", "expires_at", "wallet_id"),
        # Room on each page for the new versions of its lots (activated, expired, spent),
        # so they stay on the page without new index entries (migration 0018).
        {"postgresql_with": {"fillfactor": 50}},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"))
    entry_id: Mapped[int] = mapped_column(ForeignKey("ledger_entries.id"))
    order_pk: Mapped[str | None] = mapped_column(ForeignKey("orders.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    activates_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    activated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    expired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Allocation(Base):
    """Points an entry took from a lot (positive) or gave back to it (negative)."""

    __tablename__ = "allocations"
    __table_args__ = (
        CheckConstraint("points <> 0", name="points"),
        Index("ix_allocations_entry_id", "entry_id"),
        Index("ix_allocations_lot_id", "lot_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("ledger_entries.id"))
    lot_id: Mapped[int] = mapped_column(ForeignKey("lots.id"))
    points: Mapped[int] = mapped_column(BigInteger)


class Hold(Base):
    """Points reserved at checkout, later captured (in full or part) or released."""

    __tablename__ = "holds"
    __table_args__ = (
        CheckConstraint("points > 0", name="points"),
        CheckConstraint(one_of("status", HOLD_STATUSES), name="status"),
        CheckConstraint(
            "(status = 'captured') = (captured_points IS NOT NULL)", name="captured_points"
        ),
        CheckConstraint(
            "captured_points IS NULL OR (captured_points > 0 AND captured_points <= points)",
            name="captured_range",
        ),
        Index("ix_holds_wallet_id_status", "wallet_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"))
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    client_id: Mapped[str | None] = mapped_column(String(40))
    points: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="held")
    reference: Mapped[str | None] = mapped_column(String(200))
    entry_id: Mapped[int] = mapped_column(ForeignKey("ledger_entries.id"))
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    captured_points: Mapped[int | None] = mapped_column(BigInteger)
    redemption_id: Mapped[str | None] = mapped_column(String(40))
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Redemption(Base):
    """Points spent: directly, or by capturing a hold."""

    __tablename__ = "redemptions"
    __table_args__ = (
        CheckConstraint("points > 0", name="points"),
        # Analytics: a member's activity (redemptions count as activity).
        Index("ix_redemptions_member_id_created_at", "member_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"))
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    client_id: Mapped[str | None] = mapped_column(String(40))
    points: Mapped[int] = mapped_column(BigInteger)
    reference: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(String(500))
    entry_id: Mapped[int] = mapped_column(ForeignKey("ledger_entries.id"))
    hold_id: Mapped[str | None] = mapped_column(ForeignKey("holds.id"))
    # Set when the points were given back (a cancelled reward claim).
    returned_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Order(Base):
    """An order a storefront reported, what it earned and how much of it was refunded."""

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("channel_id", "order_id"),
        CheckConstraint("total >= 0", name="total"),
        CheckConstraint("points >= 0", name="points"),
        CheckConstraint("points_reversed BETWEEN 0 AND points", name="points_reversed"),
        CheckConstraint("amount_refunded BETWEEN 0 AND total", name="amount_refunded"),
        # A member's orders, over a period or all of them (the caps, badges, tiers).
        Index("ix_orders_member_id_placed_at", "member_id", "placed_at"),
        # Analytics: orders over a period.
        Index("ix_orders_placed_at", "placed_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # The order id is the storefront's, unique per channel; the client that reported it is
    # kept for the record (an import has none).
    channel_id: Mapped[str] = mapped_column(ForeignKey("channels.id"))
    client_id: Mapped[str | None] = mapped_column(String(40))
    order_id: Mapped[str] = mapped_column(String(128))
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"))
    total: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    # [{sku, category, quantity, unit_price, points, refunded_quantity}]
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument, default=list)
    placed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    points: Mapped[int] = mapped_column(BigInteger)
    points_reversed: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    activates_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # The earning rules that produced the points: [{rule, kind, label, points}]
    breakdown: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument, default=list)
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_entries.id"))
    request_hash: Mapped[str] = mapped_column(String(64))
    response: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Refund(Base):
    """A refund of (part of) an order and the points it reversed."""

    __tablename__ = "refunds"
    __table_args__ = (
        UniqueConstraint("channel_id", "refund_id"),
        CheckConstraint("amount >= 0", name="amount"),
        CheckConstraint("points_reversed >= 0", name="points_reversed"),
        CheckConstraint("shortfall >= 0 AND shortfall <= points_reversed", name="shortfall"),
        CheckConstraint("points_expired >= 0 AND debt >= 0", name="parts"),
        CheckConstraint("shortfall + debt + points_expired <= points_reversed", name="parts_sum"),
        CheckConstraint("outstanding >= 0 AND outstanding <= shortfall + debt", name="outstanding"),
        Index("ix_refunds_order_pk", "order_pk"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    channel_id: Mapped[str] = mapped_column(ForeignKey("channels.id"))
    client_id: Mapped[str | None] = mapped_column(String(40))
    refund_id: Mapped[str] = mapped_column(String(128))
    order_pk: Mapped[str] = mapped_column(ForeignKey("orders.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument, default=list)
    points_reversed: Mapped[int] = mapped_column(BigInteger)
    # Points that could not be taken back because the member had already spent them:
    # forgiven (``within_balance``) or made debt (``allow_negative``).
    shortfall: Mapped[int] = mapped_column(BigInteger, default=0)
    debt: Mapped[int] = mapped_column(BigInteger, default=0)
    # Points of the refund that had already expired: gone, so nothing was taken for them.
    points_expired: Mapped[int] = mapped_column(BigInteger, default=0)
    # Of the shortfall or debt, the points the order's lots would still owe if they came back
    # (a released hold, a cancelled reward claim): taken back then.
    outstanding: Mapped[int] = mapped_column(BigInteger, default=0)
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_entries.id"))
    request_hash: Mapped[str] = mapped_column(String(64))
    response: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


# The core settings are configuration (cached per process, `ledger.service._core.Settings`);
# the inactivity sweep's cursor, which the sweep moves on its own, is not.
configcache.watch(ProgramSettings, ignore=("due_sweep_after",))
