"""Members: the people in the programme, as the storefront knows them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, Date, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from loyalty.db import Base, JSONDocument, UTCDateTime, utcnow
from loyalty.members.rules import STATUSES


@dataclass(frozen=True)
class PointsSummary:
    available: int = 0
    pending: int = 0
    held: int = 0
    lifetime_earned: int = 0


class Member(Base):
    __tablename__ = "members"
    __table_args__ = (
        CheckConstraint("status IN (" + ", ".join(f"'{s}'" for s in STATUSES) + ")", name="status"),
        Index("ix_members_email", "email"),
        Index("ix_members_referrer_id", "referrer_id"),
        # Lifecycle triggers: whose birthday began where, and who enrolled when (inactivity).
        Index("ix_members_birthday", "birthday", "timezone"),
        Index("ix_members_enrolled_at", "enrolled_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    external_id: Mapped[str] = mapped_column(String(128), unique=True)
    email: Mapped[str | None] = mapped_column(String(254))
    name: Mapped[str | None] = mapped_column(String(200))
    birthday: Mapped[dt.date | None] = mapped_column(Date)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    marketing_consent: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="active")
    referral_code: Mapped[str] = mapped_column(String(16), unique=True)
    referrer_id: Mapped[str | None] = mapped_column(ForeignKey("members.id"))
    # Storefront-provided data such as a device id or payment-card hash (used against abuse).
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONDocument, default=dict)
    enrolled_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    enrolled_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    @property
    def points(self) -> PointsSummary:
        """The member's balances, as attached by `loyalty.members.service` from the ledger."""
        summary: PointsSummary = self.__dict__.get("_points_summary") or PointsSummary()
        return summary

    def attach_points(self, summary: PointsSummary) -> None:
        self.__dict__["_points_summary"] = summary

    @property
    def tier(self) -> dict[str, str] | None:
        """The member's tier as ``{code, name}``, as attached by `loyalty.members.service`
        from the tiers; None when the member has no tier (or no ladder exists)."""
        tier: dict[str, str] | None = self.__dict__.get("_tier")
        return tier

    def attach_tier(self, tier: dict[str, str] | None) -> None:
        self.__dict__["_tier"] = tier
