"""What happens to reward claims, told to the areas above (see `loyalty.bus`)."""

from __future__ import annotations

from dataclasses import dataclass

from loyalty.bus import Event


@dataclass(frozen=True, kw_only=True)
class ClaimChanged(Event):
    """A claim was issued (bought or given), used or cancelled (``status`` says which)."""

    member_id: str
    claim_id: str
    reward_id: str
    points: int
    code: str
    status: str
    source: str
