"""Tiers as reports may read them: read-only selects for the analytics above."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Select, and_, case, or_, select

from loyalty.tiers.models import MemberTier, TierChange


def member_tiers(now: dt.datetime) -> Select[*tuple[Any, ...]]:
    """Members the tiers have seen and their effective tier code as of ``now`` (an active
    manual assignment, else the computed tier): ``member_id``, ``code``, ``manual``. Members
    without a row hold the base tier (see `loyalty.tiers.service.current_tiers`)."""
    manual = and_(
        MemberTier.manual_code.is_not(None),
        or_(MemberTier.manual_until.is_(None), MemberTier.manual_until > now),
    )
    return select(
        MemberTier.member_id,
        case((manual, MemberTier.manual_code), else_=MemberTier.tier_code).label("code"),
        manual.label("manual"),
    )


def changes() -> Select[*tuple[Any, ...]]:
    """Tier history: ``member_id``, ``kind``, ``from_code``, ``to_code``, ``at``."""
    return select(
        TierChange.id,
        TierChange.member_id,
        TierChange.kind,
        TierChange.from_code,
        TierChange.to_code,
        TierChange.at,
    )
