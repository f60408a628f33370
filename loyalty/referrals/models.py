"""Tables of loyalty.referrals: the programme's terms and one referral per referee."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from loyalty.db import Base, UTCDateTime, one_of, utcnow
from loyalty.referrals.rules import ABUSE_REASONS, REFERRER_OUTCOMES, STATUSES


class ReferralSettings(Base):
    """The referral programme's terms: one row (id 1), seeded by the migration."""

    __tablename__ = "referral_settings"
    __table_args__ = (
        CheckConstraint("id = 1", name="single_row"),
        CheckConstraint("min_order_total >= 0", name="min_order_total"),
        CheckConstraint("referrer_points >= 0 AND referee_points >= 0", name="points"),
        CheckConstraint("monthly_cap IS NULL OR monthly_cap >= 0", name="monthly_cap"),
        CheckConstraint("total_cap IS NULL OR total_cap >= 0", name="total_cap"),
        CheckConstraint(
            "shared_tier_days IS NULL OR shared_tier_days BETWEEN 1 AND 3650",
            name="shared_tier_days",
        ),
        CheckConstraint("velocity_limit IS NULL OR velocity_limit >= 1", name="velocity_limit"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    min_order_total: Mapped[int] = mapped_column(BigInteger, default=0)  # minor units
    min_order_currency: Mapped[str | None] = mapped_column(String(3))  # None: any currency
    referrer_points: Mapped[int] = mapped_column(BigInteger, default=0)
    referrer_reward_id: Mapped[str | None] = mapped_column(ForeignKey("rewards.id"))
    referee_points: Mapped[int] = mapped_column(BigInteger, default=0)
    referee_reward_id: Mapped[str | None] = mapped_column(ForeignKey("rewards.id"))
    monthly_cap: Mapped[int | None] = mapped_column(Integer)
    total_cap: Mapped[int | None] = mapped_column(Integer)
    shared_tier_days: Mapped[int | None] = mapped_column(Integer)
    velocity_limit: Mapped[int | None] = mapped_column(Integer)
    link_template: Mapped[str | None] = mapped_column(String(500))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(64))


class Referral(Base):
    """One referee attributed to a referrer at enrolment (final: one row per referee), and
    what came of it: qualification on an order, the rewards given, a review, a clawback."""

    __tablename__ = "referrals"
    __table_args__ = (
        CheckConstraint(one_of("status", STATUSES), name="status"),
        CheckConstraint(
            "reason IS NULL OR " + one_of("reason", ABUSE_REASONS + ("manual",)), name="reason"
        ),
        CheckConstraint(
            "referrer_outcome IS NULL OR " + one_of("referrer_outcome", REFERRER_OUTCOMES),
            name="referrer_outcome",
        ),
        CheckConstraint("referrer_id <> referee_id", name="not_self"),
        CheckConstraint(
            "referrer_points >= 0 AND referee_points >= 0 AND "
            "referrer_points_clawed_back >= 0 AND referee_points_clawed_back >= 0",
            name="points",
        ),
        CheckConstraint(
            "(status IN ('qualified', 'clawed_back')) = (qualified_at IS NOT NULL)",
            name="qualified",
        ),
        CheckConstraint("(status = 'clawed_back') = (clawed_back_at IS NOT NULL)", name="clawed"),
        UniqueConstraint("referee_id"),
        UniqueConstraint("order_pk"),
        Index("ix_referrals_referrer_id_id", "referrer_id", "id"),
        Index("ix_referrals_status_id", "status", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    referrer_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    referee_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(String(500))  # a manager's review reason
    order_pk: Mapped[str | None] = mapped_column(ForeignKey("orders.id"))
    referrer_outcome: Mapped[str | None] = mapped_column(String(32))
    referrer_points: Mapped[int] = mapped_column(BigInteger, default=0)
    referee_points: Mapped[int] = mapped_column(BigInteger, default=0)
    referrer_claim_id: Mapped[str | None] = mapped_column(ForeignKey("reward_claims.id"))
    referee_claim_id: Mapped[str | None] = mapped_column(ForeignKey("reward_claims.id"))
    referrer_points_clawed_back: Mapped[int] = mapped_column(BigInteger, default=0)
    referee_points_clawed_back: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    qualified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    reviewed_by: Mapped[str | None] = mapped_column(String(64))
    clawed_back_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
