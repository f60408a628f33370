"""Tables of the earning rules: programme-wide earning settings, product multipliers and
campaigns. Written only by `loyalty.earning.service`."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Index,
    Integer,
    Numeric,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from loyalty import configcache
from loyalty.db import Base, JSONDocument, UTCDateTime, one_of, utcnow
from loyalty.earning.rules import CAMPAIGN_TARGETS, MULTIPLIER_SCOPES


class EarningSettings(Base):
    """Programme-wide earning limits: one row, created by the migration (no limits)."""

    __tablename__ = "earning_settings"
    __table_args__ = (
        CheckConstraint("id = 1", name="single_row"),
        CheckConstraint("minimum_order_total IS NULL OR minimum_order_total > 0", name="minimum"),
        CheckConstraint(
            "(minimum_order_total IS NULL) = (minimum_order_currency IS NULL)",
            name="minimum_currency",
        ),
        CheckConstraint("daily_cap IS NULL OR daily_cap > 0", name="daily_cap"),
        CheckConstraint("monthly_cap IS NULL OR monthly_cap > 0", name="monthly_cap"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    # Orders below this total (minor units of this currency, excluded items not counted)
    # earn nothing.
    minimum_order_total: Mapped[int | None] = mapped_column(BigInteger)
    minimum_order_currency: Mapped[str | None] = mapped_column(String(3))
    excluded_categories: Mapped[list[str]] = mapped_column(JSONDocument, default=list)
    daily_cap: Mapped[int | None] = mapped_column(BigInteger)
    monthly_cap: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(64))


class ProductMultiplier(Base):
    """Items of a category, or one SKU, earn ``multiplier`` times the base rate."""

    __tablename__ = "product_multipliers"
    __table_args__ = (
        UniqueConstraint("scope", "match"),
        CheckConstraint(one_of("scope", MULTIPLIER_SCOPES), name="scope"),
        CheckConstraint("multiplier > 0", name="multiplier"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    scope: Mapped[str] = mapped_column(String(16))
    match: Mapped[str] = mapped_column(String(100))
    multiplier: Mapped[Decimal] = mapped_column(Numeric(8, 4))
    label: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Campaign(Base):
    """A time-boxed bonus (multiplier and/or fixed points) for a target group of members,
    optionally with a points budget that ends it once spent."""

    __tablename__ = "campaigns"
    __table_args__ = (
        CheckConstraint(one_of("target", CAMPAIGN_TARGETS), name="target"),
        CheckConstraint("ends_at > starts_at", name="window"),
        CheckConstraint("multiplier IS NULL OR multiplier > 1", name="multiplier"),
        CheckConstraint("bonus_points IS NULL OR bonus_points > 0", name="bonus_points"),
        CheckConstraint("multiplier IS NOT NULL OR bonus_points IS NOT NULL", name="reward"),
        CheckConstraint("budget IS NULL OR budget > 0", name="budget"),
        CheckConstraint("spent >= 0 AND (budget IS NULL OR spent <= budget)", name="spent"),
        CheckConstraint("holdout_pct BETWEEN 0 AND 50", name="holdout_pct"),
        Index("ix_campaigns_window", "starts_at", "ends_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(String(500))
    starts_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    target: Mapped[str] = mapped_column(String(16), default="all")
    # tier codes, lifecycle stages or member ids, as the target says
    target_values: Mapped[list[str]] = mapped_column(JSONDocument, default=list)
    multiplier: Mapped[Decimal | None] = mapped_column(Numeric(8, 4))
    bonus_points: Mapped[int | None] = mapped_column(BigInteger)
    budget: Mapped[int | None] = mapped_column(BigInteger)
    spent: Mapped[int] = mapped_column(BigInteger, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Percent of the target held out (no campaign points), by member, to measure uplift.
    holdout_pct: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


# Configuration that pricing caches (loyalty.configcache): changing these rows is a change of
# the programme; a campaign's running spend is not.
configcache.watch(EarningSettings)
configcache.watch(ProductMultiplier)
configcache.watch(Campaign, ignore=("spent",))
