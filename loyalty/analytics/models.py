"""Analytics' own tables: its settings, each member's stage and RFM scores as the worker last
computed them (with their history), churn-warning flags and retention alerts. Everything else
analytics reports is read from the areas below through their `reporting` modules."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
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
from loyalty.analytics.rules import ALERT_KINDS, FLAG_OUTCOMES, RISK_REASONS, SEGMENTS
from loyalty.db import Base, UTCDateTime, one_of, utcnow
from loyalty.members.rules import STAGES

# SQLite only auto-increments INTEGER PRIMARY KEY columns.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class AnalyticsSettings(Base):
    """What managers set: the lifecycle thresholds, the churn warning's drop, the currency and
    cost per point money figures use, and the retention alert's threshold. One row."""

    __tablename__ = "analytics_settings"
    __table_args__ = (
        CheckConstraint("id = 1", name="single_row"),
        CheckConstraint("new_days BETWEEN 1 AND 365", name="new_days"),
        CheckConstraint("active_days BETWEEN 1 AND 3650", name="active_days"),
        CheckConstraint("silent_days > active_days AND silent_days <= 3650", name="silent_days"),
        CheckConstraint("risk_drop_pct BETWEEN 1 AND 100", name="risk_drop_pct"),
        CheckConstraint("rfm_days BETWEEN 30 AND 3650", name="rfm_days"),
        CheckConstraint("cost_per_point >= 0", name="cost_per_point"),
        CheckConstraint("alert_drop_points > 0 AND alert_drop_points <= 100", name="alert_drop"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    # Lifecycle stages: new for new_days after enrolment; then active with activity in the
    # last active_days, silent up to silent_days without, churned beyond.
    new_days: Mapped[int] = mapped_column(Integer, default=30)
    active_days: Mapped[int] = mapped_column(Integer, default=90)
    silent_days: Mapped[int] = mapped_column(Integer, default=180)
    # The churn warning: activity over the last 30 days down by this share (or more) against
    # the member's own baseline (the 90 days before, per 30 days).
    risk_drop_pct: Mapped[int] = mapped_column(Integer, default=30)
    # RFM looks at orders over this many days.
    rfm_days: Mapped[int] = mapped_column(Integer, default=365)
    # Money figures: orders in this currency, points at this cost (major units per point).
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    cost_per_point: Mapped[Decimal] = mapped_column(Numeric(12, 6), default=Decimal("0.01"))
    # A retention alert goes out when 30-day retention drops by more than this many
    # percentage points against a week or a month before.
    alert_drop_points: Mapped[Decimal] = mapped_column(Numeric(5, 2), default=Decimal(5))
    # The worker's last recomputation of stages and flags (once a day).
    computed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(64))


class MemberStage(Base):
    """A member's lifecycle stage, RFM scores and segment as last computed by the worker."""

    __tablename__ = "member_stages"
    __table_args__ = (
        CheckConstraint(one_of("stage", STAGES), name="stage"),
        CheckConstraint("segment IS NULL OR " + one_of("segment", SEGMENTS), name="segment"),
        Index("ix_member_stages_stage", "stage"),
        Index("ix_member_stages_segment", "segment"),
    )

    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"), primary_key=True)
    stage: Mapped[str] = mapped_column(String(16))
    segment: Mapped[str | None] = mapped_column(String(24))
    recency: Mapped[int | None] = mapped_column(Integer)
    frequency: Mapped[int | None] = mapped_column(Integer)
    monetary: Mapped[int | None] = mapped_column(Integer)
    last_active_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_order_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    orders: Mapped[int] = mapped_column(Integer, default=0)
    revenue: Mapped[int] = mapped_column(BigInteger, default=0)
    since: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    computed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class StageChange(Base):
    """One change of a member's stage or segment (append-only history)."""

    __tablename__ = "member_stage_history"
    __table_args__ = (
        Index("ix_member_stage_history_member_id_id", "member_id", "id"),
        Index("ix_member_stage_history_at", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    from_stage: Mapped[str | None] = mapped_column(String(16))
    to_stage: Mapped[str] = mapped_column(String(16))
    from_segment: Mapped[str | None] = mapped_column(String(24))
    to_segment: Mapped[str | None] = mapped_column(String(24))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class RiskFlag(Base):
    """A churn warning: raised once when the member's activity fell (or they went silent),
    cleared when they came back. ``outcome`` says what followed: ``won_back`` (active again
    within 30 days of the flag), ``returned`` (later), ``churned`` (reached the churned stage
    first) or null while open."""

    __tablename__ = "risk_flags"
    __table_args__ = (
        CheckConstraint(one_of("reason", RISK_REASONS), name="reason"),
        CheckConstraint("outcome IS NULL OR " + one_of("outcome", FLAG_OUTCOMES), name="outcome"),
        CheckConstraint("(outcome IS NULL) = (closed_at IS NULL)", name="closed"),
        # One open flag per member.
        Index(
            "uq_risk_flags_open_member_id",
            "member_id",
            unique=True,
            postgresql_where=text("closed_at IS NULL"),
            sqlite_where=text("closed_at IS NULL"),
        ),
        Index("ix_risk_flags_flagged_at", "flagged_at", "id"),
        Index("ix_risk_flags_member_id", "member_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    reason: Mapped[str] = mapped_column(String(16))
    recent: Mapped[int] = mapped_column(Integer)
    baseline: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    last_active_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    flagged_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(16))
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class RetentionAlert(Base):
    """30-day retention dropped against a week or a month before; once per kind and day."""

    __tablename__ = "retention_alerts"
    __table_args__ = (
        CheckConstraint(one_of("kind", ALERT_KINDS), name="kind"),
        UniqueConstraint("kind", "day"),
        Index("ix_retention_alerts_created_at", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    day: Mapped[dt.date] = mapped_column(Date)
    current_rate: Mapped[Decimal] = mapped_column(Numeric(7, 4))
    previous_rate: Mapped[Decimal] = mapped_column(Numeric(7, 4))
    drop_points: Mapped[Decimal] = mapped_column(Numeric(7, 2))
    members: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class CohortActivity(Base):
    """What cohort retention needs of a member's activity, kept by the worker for one basis
    (``enrollment``: from the local day the member joined; ``first_order``: from the local day
    of their first counted order): ``joined_on`` that day, ``marks`` one bit per retention mark
    of `rules.MARKS` (bit k: active in mark k's days), ``months`` one bit per calendar month
    since (bit i: active in month i, i < 60). Only activity before the state's ``through``
    counts here; reports add what came since from the source tables. A member with no activity
    has no row (and no ``first_order`` row before a counted order)."""

    __tablename__ = "cohort_activity"
    __table_args__ = (
        CheckConstraint(one_of("basis", ("enrollment", "first_order")), name="basis"),
        Index("ix_cohort_activity_basis_joined_on", "basis", "joined_on"),
    )

    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"), primary_key=True)
    basis: Mapped[str] = mapped_column(String(16), primary_key=True)
    joined_on: Mapped[dt.date] = mapped_column(Date)
    marks: Mapped[int] = mapped_column(Integer, default=0)
    months: Mapped[int] = mapped_column(BigInteger, default=0)


class CohortActivityState(Base):
    """How far `CohortActivity` goes: activity before ``through`` (UTC) as the source tables
    held it at ``refreshed_at``. One row; none until the worker first built the table."""

    __tablename__ = "cohort_activity_state"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    through: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    refreshed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    built_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class OrderFacts(Base):
    """What repurchase and lifetime value need of a member's counted orders (not refunded in
    full), kept by the worker: ``first_at`` the first one's time, ``second_at`` the first one
    strictly after it (none with a single order time), ``orders`` how many, ``revenue`` their
    money in the state's currency, net of refunds (minor units). Only orders placed before the
    state's ``through`` count here; reports add what came since from the orders. A member
    without a counted order before ``through`` has no row."""

    __tablename__ = "order_facts"
    __table_args__ = (Index("ix_order_facts_first_at", "first_at"),)

    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"), primary_key=True)
    first_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    second_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    orders: Mapped[int] = mapped_column(Integer)
    revenue: Mapped[int] = mapped_column(BigInteger)


class OrderFactsState(Base):
    """How far `OrderFacts` goes: orders placed before ``through`` (UTC) as the source tables
    held them at ``refreshed_at``, revenue in ``currency`` (the settings' when built). One row;
    none until the worker first built the table."""

    __tablename__ = "order_facts_state"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    currency: Mapped[str] = mapped_column(String(3))
    through: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    refreshed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    built_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


# Configuration that accruals cache (the stage thresholds of campaigns; loyalty.configcache).
configcache.watch(AnalyticsSettings, ignore=("computed_at",))  # not the daily pass's stamp
