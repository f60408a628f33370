"""Tables of loyalty.tiers: the ladder, the qualification policy, each member's tier and the
tier history. Written only by `loyalty.tiers.service`."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from loyalty import configcache
from loyalty.db import Base, UTCDateTime, one_of, utcnow
from loyalty.tiers.rules import CHANGE_KINDS, DOWNGRADE_MODES, METRICS, WINDOWS

# SQLite only auto-increments INTEGER PRIMARY KEY columns.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Tier(Base):
    """A rung of the ladder; ``code`` is its immutable natural key."""

    __tablename__ = "tiers"
    __table_args__ = (
        CheckConstraint("threshold >= 0", name="threshold"),
        CheckConstraint(
            "retain_threshold IS NULL OR (retain_threshold >= 0 AND retain_threshold <= threshold)",
            name="retain_threshold",
        ),
        CheckConstraint("points_multiplier >= 1", name="points_multiplier"),
    )

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    rank: Mapped[int] = mapped_column(Integer, unique=True)
    # In the policy's metric units: points, major currency units, or orders.
    threshold: Mapped[int] = mapped_column(BigInteger)
    # What keeps the tier at review; the threshold when null.
    retain_threshold: Mapped[int | None] = mapped_column(BigInteger)
    benefits: Mapped[str | None] = mapped_column(String(2000))
    points_multiplier: Mapped[Decimal] = mapped_column(Numeric(6, 4), default=Decimal(1))
    # A paid tier: the Stripe price of its subscription (members buy it, see loyalty.billing).
    stripe_price_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class TierSettings(Base):
    """The qualification policy: one row, created by the migration.

    ``ladder_version`` goes up with every change of the ladder or the policy; members whose
    tier was evaluated against an older version are re-evaluated by the job.
    """

    __tablename__ = "tier_settings"
    __table_args__ = (
        CheckConstraint("id = 1", name="single_row"),
        CheckConstraint(one_of("metric", METRICS), name="metric"),
        CheckConstraint(one_of("qualification_window", WINDOWS), name="window"),
        CheckConstraint("grace_days BETWEEN 0 AND 365", name="grace_days"),
        CheckConstraint(one_of("downgrade", DOWNGRADE_MODES), name="downgrade"),
        CheckConstraint("ladder_version >= 1", name="ladder_version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    metric: Mapped[str] = mapped_column(String(16), default="points")
    # WINDOW is a reserved word in SQL, hence the column's longer name.
    window: Mapped[str] = mapped_column("qualification_window", String(32), default="lifetime")
    grace_days: Mapped[int] = mapped_column(Integer, default=0)
    downgrade: Mapped[str] = mapped_column(String(16), default="one_step")
    ladder_version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(64))


class MemberTier(Base):
    """A member's computed tier (with its qualification period), any manual assignment and any
    paid tier.

    A member without a row holds the lowest tier when its threshold is 0, else no tier.
    ``due_at`` is the soonest of the review date and the ends of the manual assignment and of
    the paid tier, so the job finds due work with one index.
    """

    __tablename__ = "member_tiers"
    __table_args__ = (
        CheckConstraint(
            "manual_code IS NULL OR (manual_since IS NOT NULL AND manual_reason IS NOT NULL)",
            name="manual",
        ),
        CheckConstraint("manual_until IS NULL OR manual_code IS NOT NULL", name="manual_until"),
        CheckConstraint(
            "paid_code IS NULL OR (paid_since IS NOT NULL AND paid_until IS NOT NULL)",
            name="paid",
        ),
        Index("ix_member_tiers_due_at", "due_at"),
        Index("ix_member_tiers_ladder_version", "ladder_version"),
        Index("ix_member_tiers_tier_code", "tier_code"),
        Index("ix_member_tiers_manual_code", "manual_code"),
    )

    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"), primary_key=True)
    tier_code: Mapped[str | None] = mapped_column(ForeignKey("tiers.code"))
    # Start of the current qualification period: when the tier was reached or last renewed.
    since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    review_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    manual_code: Mapped[str | None] = mapped_column(ForeignKey("tiers.code"))
    manual_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    manual_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    manual_reason: Mapped[str | None] = mapped_column(String(500))
    manual_by: Mapped[str | None] = mapped_column(String(64))
    # A paid tier (a Stripe subscription, granted by loyalty.billing) until ``paid_until``.
    paid_code: Mapped[str | None] = mapped_column(ForeignKey("tiers.code"))
    paid_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    paid_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    paid_reference: Mapped[str | None] = mapped_column(String(255))
    due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    ladder_version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class TierChange(Base):
    """One change of a member's tier (append-only history)."""

    __tablename__ = "tier_history"
    __table_args__ = (
        CheckConstraint(one_of("kind", CHANGE_KINDS), name="kind"),
        Index("ix_tier_history_member_id_id", "member_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    kind: Mapped[str] = mapped_column(String(16))
    # Codes, not foreign keys: history outlives tiers removed from the ladder.
    from_code: Mapped[str | None] = mapped_column(String(32))
    to_code: Mapped[str | None] = mapped_column(String(32))
    metric_value: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(String(500))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str | None] = mapped_column(String(64))


# Configuration that accruals cache (loyalty.configcache).
configcache.watch(Tier)
configcache.watch(TierSettings)
