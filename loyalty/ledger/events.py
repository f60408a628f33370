"""What happens to points, told to the areas above (see `loyalty.bus`).

Each event carries the wallet's balance right after it (``available``, ``pending``,
``held``), as the call that caused it answered.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from loyalty.bus import Event


@dataclass(frozen=True)
class BalanceAfter:
    available: int
    pending: int
    held: int

    def as_dict(self) -> dict[str, int]:
        return {"available": self.available, "pending": self.pending, "held": self.held}


@dataclass(frozen=True, kw_only=True)
class PointsEvent(Event):
    member_id: str
    balance: BalanceAfter
    actor: str | None


@dataclass(frozen=True, kw_only=True)
class OrderRecorded(PointsEvent):
    """An order was recorded (whatever it earned); its points are pending or active."""

    order_pk: str
    order_id: str
    channel_id: str
    points: int
    pending: bool
    activates_at: dt.datetime


@dataclass(frozen=True, kw_only=True)
class OrderActivated(PointsEvent):
    """An order's return window ended: its points became spendable."""

    order_pk: str
    order_id: str
    points: int


@dataclass(frozen=True, kw_only=True)
class OrderRefunded(PointsEvent):
    """A refund of (part of) an order was recorded and its points taken back."""

    order_pk: str
    order_id: str
    refund_pk: str
    refund_id: str
    points: int
    shortfall: int
    order_total: int
    amount_refunded: int
    currency: str


@dataclass(frozen=True, kw_only=True)
class BonusCredited(PointsEvent):
    """Bonus points (a badge, a referral, a birthday gift) were credited, active at once."""

    entry_id: str
    points: int
    reason: str
    reference: str | None


@dataclass(frozen=True, kw_only=True)
class PointsTakenBack(PointsEvent):
    """Bonus points were taken back (a clawback); ``points`` is what was taken (<= 0)."""

    entry_id: str | None
    points: int
    reason: str
    reference: str | None


@dataclass(frozen=True, kw_only=True)
class PointsAdjusted(PointsEvent):
    """A manager credited (points > 0) or debited (points < 0) the member."""

    entry_id: str
    points: int
    reason: str


@dataclass(frozen=True, kw_only=True)
class PointsRedeemed(PointsEvent):
    """Points were spent: a redemption, or a hold's capture."""

    entry_id: str
    points: int
    reference: str | None


@dataclass(frozen=True, kw_only=True)
class PointsReturned(PointsEvent):
    """A returnable redemption was given back (a cancelled reward claim)."""

    entry_id: str
    points: int
    reference: str | None


@dataclass(frozen=True, kw_only=True)
class PointsExpired(PointsEvent):
    """Points expired: by date, or all of them for inactivity."""

    points: int
    reason: str


@dataclass(frozen=True, kw_only=True)
class HoldChanged(PointsEvent):
    """A hold was placed, captured, released or ran out of time (``status`` says which)."""

    hold_id: str
    points: int
    captured_points: int | None
    status: str
