"""The community's tables as reports may read them: read-only selects with named columns for
the analytics above. Nothing here writes or commits."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Select, select

from loyalty.community.models import BadgeAward, CommunityEvent


def events() -> Select[*tuple[Any, ...]]:
    """Engagement events: ``member_id``, ``type``, ``occurred_at``, ``properties``."""
    return select(
        CommunityEvent.member_id,
        CommunityEvent.type,
        CommunityEvent.occurred_at,
        CommunityEvent.properties,
    )


def badge_awards() -> Select[*tuple[Any, ...]]:
    """Badge levels awarded: ``member_id``, ``awarded_at``, ``revoked_at``."""
    return select(BadgeAward.member_id, BadgeAward.awarded_at, BadgeAward.revoked_at)


def late_events(since: dt.datetime, before: dt.datetime) -> Select[*tuple[Any, ...]]:
    """``member_id`` of engagement events that occurred before ``before`` but were recorded
    since ``since`` (back-filled or committed late)."""
    return select(CommunityEvent.member_id).where(
        CommunityEvent.created_at >= since, CommunityEvent.occurred_at < before
    )
