"""Tables of loyalty.billing: Stripe customers linked to members, the Stripe events received
(each once), payments and refunds as they became orders, subscriptions that pay for tiers, and
the promotion codes that mirror reward claims. Written only by `loyalty.billing.service`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from loyalty.db import Base, JSONDocument, UTCDateTime, one_of, utcnow

EVENT_STATUSES = ("processed", "ignored", "deferred", "review")
PAYMENT_STATUSES = ("accrued", "unmatched", "review")
REFUND_STATUSES = ("reversed", "review")
PROMOTION_STATUSES = ("creating", "active", "deactivating", "inactive", "failed")
CUSTOMER_SOURCES = ("api", "metadata", "checkout")


class StripeCustomer(Base):
    """A Stripe customer linked to a member (one customer per member, one member per
    customer)."""

    __tablename__ = "stripe_customers"

    customer_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"), unique=True)
    source: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (CheckConstraint(one_of("source", CUSTOMER_SOURCES), name="source"),)


class StripeEvent(Base):
    """A Stripe event, recorded once whether it came by webhook or by reconciliation.

    ``deferred`` events wait for ``waiting_for`` (``payment:pi_...``, ``subscription:sub_...``)
    and run again when it becomes known; ``review`` ones could not be applied (``detail``
    says why)."""

    __tablename__ = "stripe_events"
    __table_args__ = (
        CheckConstraint(one_of("status", EVENT_STATUSES), name="status"),
        Index("ix_stripe_events_waiting_for", "waiting_for"),
        Index("ix_stripe_events_status_created", "status", "created"),
    )

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    # When Stripe created the event (its order), and when it reached us.
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    source: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    waiting_for: Mapped[str | None] = mapped_column(String(300))
    detail: Mapped[str | None] = mapped_column(String(500))
    # The event's data.object, kept while it is deferred (and for review).
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    processed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class StripePayment(Base):
    """A successful Stripe payment (a PaymentIntent, or a Checkout Session without one) and
    the order it became; ``unmatched`` when no member was known for it yet."""

    __tablename__ = "stripe_payments"
    __table_args__ = (
        CheckConstraint(one_of("status", PAYMENT_STATUSES), name="status"),
        CheckConstraint("amount >= 0", name="amount"),
        Index("ix_stripe_payments_customer_id", "customer_id"),
        Index("ix_stripe_payments_status_id", "status", "id"),
    )

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # pi_... (or cs_...)
    member_id: Mapped[str | None] = mapped_column(ForeignKey("members.id"))
    customer_id: Mapped[str | None] = mapped_column(String(255))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    paid_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))
    points: Mapped[int | None] = mapped_column(BigInteger)
    detail: Mapped[str | None] = mapped_column(String(500))
    event_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class StripeRefund(Base):
    """A Stripe refund of a payment, and the points it took back (once per refund id)."""

    __tablename__ = "stripe_refunds"
    __table_args__ = (
        CheckConstraint(one_of("status", REFUND_STATUSES), name="status"),
        Index("ix_stripe_refunds_payment_id", "payment_id"),
    )

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # re_...
    payment_id: Mapped[str] = mapped_column(ForeignKey("stripe_payments.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    # What the order still had to refund, when Stripe refunded more (then `review`).
    amount_applied: Mapped[int] = mapped_column(BigInteger)
    points_reversed: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(String(500))
    event_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class StripeSubscription(Base):
    """A Stripe subscription that pays for a member's tier, as the newest event told it.

    ``state_at`` is the Stripe time of the newest event applied, so an older event arriving
    late changes nothing; ``granted_until`` is how long the tier is granted for."""

    __tablename__ = "stripe_subscriptions"
    __table_args__ = (Index("ix_stripe_subscriptions_member_id", "member_id"),)

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # sub_...
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    customer_id: Mapped[str | None] = mapped_column(String(255))
    tier_code: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))
    current_period_end: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    cancel_at_period_end: Mapped[bool] = mapped_column(default=False)
    payment_failed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    granted_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    state_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class StripePromotionCode(Base):
    """The Stripe promotion code that mirrors a discount reward claim.

    The calls to Stripe are made by the job (``creating`` and ``deactivating`` rows whose
    ``next_attempt_at`` has come), never inside the claim's transaction; failed calls are
    retried with backoff, then the row is ``failed``."""

    __tablename__ = "stripe_promotion_codes"
    __table_args__ = (
        CheckConstraint(one_of("status", PROMOTION_STATUSES), name="status"),
        Index("ix_stripe_promotion_codes_status_next_attempt_at", "status", "next_attempt_at"),
    )

    claim_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    code: Mapped[str] = mapped_column(String(64))
    # What the coupon takes off: an amount in minor units of ``currency``, or a percentage.
    amount_off: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    percent_off: Mapped[int | None] = mapped_column(Integer)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))
    # Whether the code must end up inactive (the claim was cancelled, used or expired).
    deactivate: Mapped[bool] = mapped_column(default=False)
    coupon_id: Mapped[str | None] = mapped_column(String(255))
    promotion_code_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
