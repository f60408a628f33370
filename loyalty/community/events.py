"""What happens in the community, told to the areas above (see `loyalty.bus`)."""

from __future__ import annotations

from dataclasses import dataclass

from loyalty.bus import Event


@dataclass(frozen=True, kw_only=True)
class BadgeAwarded(Event):
    member_id: str
    award_id: str
    badge_id: str
    level: int
    level_name: str
    bonus_points: int
