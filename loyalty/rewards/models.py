"""Tables of loyalty.rewards: perks, their yearly grants, the rewards catalogue and claims."""

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

from loyalty import clock
from loyalty.db import Base, JSONDocument, UTCDateTime, one_of, utcnow
from loyalty.rewards.rules import (
    CLAIM_SOURCES,
    CLAIM_STATUSES,
    PERK_KINDS,
    REWARD_KINDS,
    RewardTerms,
)


class Reward(Base):
    """An item of the catalogue, bought with points; a claim issues a coupon for it."""

    __tablename__ = "rewards"
    __table_args__ = (
        CheckConstraint(one_of("kind", REWARD_KINDS), name="kind"),
        CheckConstraint("points_cost > 0", name="points_cost"),
        CheckConstraint("amount IS NULL OR amount > 0", name="amount"),
        CheckConstraint("(amount IS NULL) = (currency IS NULL)", name="amount_currency"),
        CheckConstraint("percent IS NULL OR percent BETWEEN 1 AND 100", name="percent"),
        CheckConstraint(
            "kind <> 'fixed_discount' OR amount IS NOT NULL", name="fixed_discount_amount"
        ),
        CheckConstraint(
            "kind <> 'percentage_discount' OR percent IS NOT NULL", name="percentage_percent"
        ),
        CheckConstraint("kind <> 'free_product' OR sku IS NOT NULL", name="free_product_sku"),
        CheckConstraint("stock IS NULL OR stock >= 0", name="stock"),
        CheckConstraint("per_member_limit IS NULL OR per_member_limit > 0", name="limit"),
        CheckConstraint("coupon_valid_days BETWEEN 1 AND 3650", name="coupon_valid_days"),
        CheckConstraint(
            "available_from IS NULL OR available_until IS NULL OR available_until > available_from",
            name="window",
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(String(500))
    points_cost: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int | None] = mapped_column(BigInteger)  # minor units
    currency: Mapped[str | None] = mapped_column(String(3))
    percent: Mapped[int | None] = mapped_column(Integer)
    sku: Mapped[str | None] = mapped_column(String(100))
    # Tiers whose members may claim it; empty: every member.
    tier_codes: Mapped[list[str]] = mapped_column(JSONDocument, default=list)
    stock: Mapped[int | None] = mapped_column(Integer)  # None: unlimited
    per_member_limit: Mapped[int | None] = mapped_column(Integer)
    available_from: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    available_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    coupon_valid_days: Mapped[int] = mapped_column(Integer, default=30)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    def terms(self) -> RewardTerms:
        return RewardTerms(
            active=self.active,
            points_cost=self.points_cost,
            tier_codes=tuple(self.tier_codes or ()),
            stock=self.stock,
            per_member_limit=self.per_member_limit,
            available_from=self.available_from,
            available_until=self.available_until,
        )


class Perk(Base):
    """A benefit of the tiers it is attached to (free shipping, a birthday gift...)."""

    __tablename__ = "perks"
    __table_args__ = (
        CheckConstraint(one_of("kind", PERK_KINDS), name="kind"),
        CheckConstraint("percent IS NULL OR percent BETWEEN 1 AND 100", name="percent"),
        CheckConstraint("bonus_points IS NULL OR bonus_points > 0", name="bonus_points"),
        CheckConstraint(
            "kind <> 'exclusive_discount' OR percent IS NOT NULL", name="discount_percent"
        ),
        CheckConstraint(
            "kind <> 'birthday_gift' OR bonus_points IS NOT NULL OR reward_id IS NOT NULL",
            name="birthday_gift",
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(String(500))
    tier_codes: Mapped[list[str]] = mapped_column(JSONDocument, default=list)
    percent: Mapped[int | None] = mapped_column(Integer)  # exclusive_discount
    bonus_points: Mapped[int | None] = mapped_column(BigInteger)  # birthday_gift
    reward_id: Mapped[str | None] = mapped_column(ForeignKey("rewards.id"))  # birthday_gift
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Claim(Base):
    """A reward claimed by a member: points spent (or a perk's gift) for a coupon code."""

    __tablename__ = "reward_claims"
    __table_args__ = (
        CheckConstraint(one_of("status", CLAIM_STATUSES), name="status"),
        CheckConstraint(one_of("source", CLAIM_SOURCES), name="source"),
        CheckConstraint(
            "(source = 'purchase' AND points > 0 AND redemption_id IS NOT NULL) OR "
            "(source = 'gift' AND points = 0 AND redemption_id IS NULL)",
            name="paid",
        ),
        CheckConstraint("(status = 'used') = (used_at IS NOT NULL)", name="used"),
        CheckConstraint("(status = 'cancelled') = (cancelled_at IS NOT NULL)", name="cancelled"),
        CheckConstraint("expires_at > created_at", name="expiry"),
        UniqueConstraint("coupon_code"),
        Index("ix_reward_claims_member_id_id", "member_id", "id"),
        Index("ix_reward_claims_reward_id_member_id", "reward_id", "member_id"),
        Index("ix_reward_claims_status_expires_at", "status", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    reward_id: Mapped[str] = mapped_column(ForeignKey("rewards.id"))
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    source: Mapped[str] = mapped_column(String(16), default="purchase")
    points: Mapped[int] = mapped_column(BigInteger)
    redemption_id: Mapped[str | None] = mapped_column(ForeignKey("redemptions.id"))
    coupon_code: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="issued")
    reference: Mapped[str | None] = mapped_column(String(200))
    client_id: Mapped[str | None] = mapped_column(String(40))
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    expired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    points_returned: Mapped[int | None] = mapped_column(BigInteger)

    @property
    def state(self) -> str:
        """The status as of now: an issued claim past its expiry counts as expired even
        before the job marks it."""
        if self.status == "issued" and self.expires_at <= clock.now():
            return "expired"
        return self.status


class PerkGrant(Base):
    """A perk given to a member for a year (the birthday gift): at most one per perk, member
    and year, which the unique constraint guarantees with several job runners."""

    __tablename__ = "perk_grants"
    __table_args__ = (
        UniqueConstraint("perk_id", "member_id", "year"),
        CheckConstraint("points IS NULL OR points > 0", name="points"),
        Index("ix_perk_grants_member_id", "member_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    perk_id: Mapped[str] = mapped_column(ForeignKey("perks.id"))
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    year: Mapped[int] = mapped_column(Integer)
    points: Mapped[int | None] = mapped_column(BigInteger)
    claim_id: Mapped[str | None] = mapped_column(ForeignKey("reward_claims.id"))
    granted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
