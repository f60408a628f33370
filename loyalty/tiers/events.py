"""What happens to members' tiers, told to the areas above (see `loyalty.bus`)."""

from __future__ import annotations

from dataclasses import dataclass

from loyalty.bus import Event


@dataclass(frozen=True, kw_only=True)
class TierChanged(Event):
    """A member's tier changed (``direction`` ``up`` or ``down``) or was renewed (``same``).

    ``kind`` is the history's: upgrade, downgrade, renewal, manual, manual_ended, paid or
    paid_ended."""

    member_id: str
    kind: str
    from_tier: str | None
    to_tier: str | None
    direction: str
    reason: str | None
