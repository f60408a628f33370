"""What happens to referrals, told to the areas above (see `loyalty.bus`).

``member_id`` is the referrer's: advocacy is theirs."""

from __future__ import annotations

from dataclasses import dataclass

from loyalty.bus import Event


@dataclass(frozen=True, kw_only=True)
class ReferralEvent(Event):
    member_id: str
    referral_id: str
    referrer_id: str
    referee_id: str
    actor: str | None


@dataclass(frozen=True, kw_only=True)
class ReferralQualified(ReferralEvent):
    """The referee's qualifying order activated: both sides were rewarded."""


@dataclass(frozen=True, kw_only=True)
class ReferralClawedBack(ReferralEvent):
    """The qualifying order was refunded below the minimum: the rewards were taken back."""
