"""Tables of loyalty.community: event types, event rules, events, streaks, badges, awards,
badge progress and leaderboard profiles. Written only by `loyalty.community.service`."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from loyalty import configcache
from loyalty.community.rules import BADGE_RULES, CAP_PERIODS
from loyalty.db import Base, JSONDocument, UTCDateTime, one_of, utcnow


class CommunitySettings(Base):
    """The community policy: one row, created by the migration."""

    __tablename__ = "community_settings"
    __table_args__ = (
        CheckConstraint("id = 1", name="single_row"),
        CheckConstraint("streak_grace_days BETWEEN 0 AND 7", name="streak_grace_days"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Missed days in a row that do not break a check-in streak.
    streak_grace_days: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(64))


class EventType(Base):
    """A kind of engagement event and the properties it carries:
    ``{name: {"type": "string"|"integer"|"number"|"boolean", "required": bool}}``."""

    __tablename__ = "event_types"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str | None] = mapped_column(String(500))
    properties: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class EventRule(Base):
    """Points for events of one type (one rule per type)."""

    __tablename__ = "event_rules"
    __table_args__ = (
        UniqueConstraint("event_type"),
        CheckConstraint("points >= 0", name="points"),
        CheckConstraint("points_per_unit IS NULL OR points_per_unit > 0", name="points_per_unit"),
        CheckConstraint("(per_unit_property IS NULL) = (points_per_unit IS NULL)", name="per_unit"),
        CheckConstraint("cap IS NULL OR cap > 0", name="cap"),
        CheckConstraint("(cap IS NULL) = (cap_period IS NULL)", name="cap_period_given"),
        CheckConstraint(
            "cap_period IS NULL OR " + one_of("cap_period", CAP_PERIODS), name="cap_period"
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    event_type: Mapped[str] = mapped_column(ForeignKey("event_types.name"))
    points: Mapped[int] = mapped_column(BigInteger, default=0)
    per_unit_property: Mapped[str | None] = mapped_column(String(64))
    points_per_unit: Mapped[Decimal | None] = mapped_column(Numeric(12, 4))
    cap: Mapped[int | None] = mapped_column(Integer)
    cap_period: Mapped[str | None] = mapped_column(String(8))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class CommunityEvent(Base):
    """An engagement event reported by an API client; ``event_id`` is its natural key per
    channel. ``response`` is the body answered, given again on a replay."""

    __tablename__ = "community_events"
    __table_args__ = (
        UniqueConstraint("channel_id", "event_id"),
        CheckConstraint("points >= 0", name="points"),
        Index("ix_community_events_member_id_type_occurred_at", "member_id", "type", "occurred_at"),
        Index("ix_community_events_member_id_type_local_date", "member_id", "type", "local_date"),
        # Analytics: events of a type (NPS answers) over a period.
        Index("ix_community_events_type_occurred_at", "type", "occurred_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    channel_id: Mapped[str] = mapped_column(ForeignKey("channels.id"))
    client_id: Mapped[str | None] = mapped_column(String(40))
    event_id: Mapped[str] = mapped_column(String(100))
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    type: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # The member's local date when it occurred (caps and streaks count by it).
    local_date: Mapped[dt.date] = mapped_column(Date)
    properties: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    points: Mapped[int] = mapped_column(BigInteger, default=0)
    request_hash: Mapped[str] = mapped_column(String(64))
    response: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class MemberStreak(Base):
    """A member's daily check-in streak, as of the last counted check-in."""

    __tablename__ = "member_streaks"
    __table_args__ = (CheckConstraint("current >= 0 AND longest >= current", name="lengths"),)

    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"), primary_key=True)
    current: Mapped[int] = mapped_column(Integer, default=0)
    longest: Mapped[int] = mapped_column(Integer, default=0)
    last_date: Mapped[dt.date | None] = mapped_column(Date)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Badge(Base):
    """A badge: a rule (the metric), levels ``[{name, threshold, bonus_points}]`` and an
    optional window ``[starts_at, ends_at)`` (a challenge)."""

    __tablename__ = "badges"
    __table_args__ = (
        CheckConstraint(one_of("rule", BADGE_RULES), name="rule"),
        CheckConstraint(
            "rule NOT IN ('event_count', 'property_sum') OR event_type IS NOT NULL",
            name="event_type",
        ),
        CheckConstraint("rule <> 'property_sum' OR property IS NOT NULL", name="property"),
        CheckConstraint(
            "starts_at IS NULL OR ends_at IS NULL OR ends_at > starts_at", name="window"
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(String(500))
    rule: Mapped[str] = mapped_column(String(16))
    event_type: Mapped[str | None] = mapped_column(ForeignKey("event_types.name"))
    property: Mapped[str | None] = mapped_column(String(64))
    levels: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument, default=list)
    starts_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    ends_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoke_on_refund: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class BadgeAward(Base):
    """A level of a badge awarded to a member: at most once (the unique key), with what
    earned it (an event or an order) and, when revoked, when and what was clawed back."""

    __tablename__ = "badge_awards"
    __table_args__ = (
        UniqueConstraint("badge_id", "member_id", "level"),
        CheckConstraint("level >= 1", name="level"),
        CheckConstraint("points >= 0", name="points"),
        Index("ix_badge_awards_member_id", "member_id"),
        Index("ix_badge_awards_order_pk", "order_pk"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    badge_id: Mapped[str] = mapped_column(ForeignKey("badges.id"))
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    level: Mapped[int] = mapped_column(Integer)
    level_name: Mapped[str] = mapped_column(String(100))
    points: Mapped[int] = mapped_column(BigInteger, default=0)
    event_pk: Mapped[str | None] = mapped_column(String(40))
    order_pk: Mapped[str | None] = mapped_column(String(40))
    awarded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    points_clawed_back: Mapped[int | None] = mapped_column(BigInteger)


class BadgeProgress(Base):
    """A member's metric on a badge as last evaluated (for leaderboards)."""

    __tablename__ = "badge_progress"
    __table_args__ = (Index("ix_badge_progress_badge_id_value", "badge_id", "value"),)

    badge_id: Mapped[str] = mapped_column(ForeignKey("badges.id"), primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"), primary_key=True)
    value: Mapped[Decimal] = mapped_column(Numeric(20, 4))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class LeaderboardProfile(Base):
    """A member's choice to appear on leaderboards, and the name shown there."""

    __tablename__ = "leaderboard_profiles"
    __table_args__ = (
        CheckConstraint("NOT opted_in OR display_name IS NOT NULL", name="display_name"),
    )

    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"), primary_key=True)
    opted_in: Mapped[bool] = mapped_column(Boolean, default=False)
    display_name: Mapped[str | None] = mapped_column(String(50))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


# Configuration that accruals and events cache (loyalty.configcache).
configcache.watch(CommunitySettings)
configcache.watch(EventType)
configcache.watch(EventRule)
configcache.watch(Badge)
