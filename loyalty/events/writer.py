"""The outbox writer: the last subscriber of every domain event. It turns each event the
outside world hears of into one outbox row, in the transaction of the change (no event without
its change, no change without its event); `loyalty.events.catalogue` documents each type's
``data``. Events the outside world does not hear of (a renewed tier, an order activation that
activated nothing) write nothing."""

from __future__ import annotations

from functools import singledispatch
from typing import Any

from sqlalchemy.orm import Session

from loyalty.bus import Event
from loyalty.community.events import BadgeAwarded
from loyalty.events import outbox
from loyalty.ledger import ports as ledger_ports
from loyalty.ledger.events import (
    BonusCredited,
    HoldChanged,
    OrderActivated,
    OrderRecorded,
    OrderRefunded,
    PointsAdjusted,
    PointsEvent,
    PointsExpired,
    PointsRedeemed,
    PointsReturned,
    PointsTakenBack,
)
from loyalty.members.events import MemberEnrolled, MemberUpdated
from loyalty.referrals.events import ReferralClawedBack, ReferralQualified
from loyalty.rewards.events import ClaimChanged
from loyalty.tiers import service as tiers_service
from loyalty.tiers.events import TierChanged

Outbound = tuple[str, dict[str, Any]] | None

ORDER_TYPE = "points.accrued"  # an order recorded

HOLD_TYPES = {
    "held": "hold.created",
    "captured": "hold.captured",
    "released": "hold.released",
    "expired": "hold.expired",
}
CLAIM_TYPES = {"issued": "reward.claimed", "used": "reward.used", "cancelled": "reward.cancelled"}
REFERRAL_FIELDS = ("referral_id", "referrer_id", "referee_id")


def write(session: Session, event: Event) -> None:
    """Subscriber of every event: record its outbound form, if it has one (and it was not
    written ahead: `write_ahead`)."""
    if outbox.written_ahead(session, event):
        return
    outbound = outbound_of(event, session)
    if outbound is None:
        return
    type_, data = outbound
    outbox.record(
        session, type=type_, member_id=event.member_id, data=data, occurred_at=event.occurred_at
    )


# The outbound types of the events the job's settlement in one statement tells (its
# ``told`` rows, `ledger_ports.TOLD_COLUMNS`), as `outbound_of` gives them one at a time: an
# order activation of no points is not among them.
_TOLD_TYPES = {"order_activated": "points.activated", "points_expired": "points.expired"}

# The outbox rows of the job's activations and expiries go in with its settlement's statement.
IN_BULK = ledger_ports.InBulk(
    "outbox",
    subscriber=write,
    clause=lambda: outbox.bulk_clause(
        "told", _TOLD_TYPES, order="position", now=ledger_ports.SETTLED_NOW
    ),
    notices=outbox.bulk_notice,
    parameters=outbox.bulk_parameters,
)


@singledispatch
def outbound_of(event: Event, session: Session) -> Outbound:
    """The type and data the outside world hears of ``event``, or None."""
    return None


@outbound_of.register
def _(event: MemberEnrolled, session: Session) -> Outbound:
    return "member.enrolled", {
        "member_id": event.member_id,
        "external_id": event.external_id,
        "status": event.status,
        "tier": _tier(session, event.member_id),
        "referrer_id": event.referrer_id,
        "enrolled_at": event.enrolled_at,
    }


@outbound_of.register
def _(event: MemberUpdated, session: Session) -> Outbound:
    return "member.updated", {
        "member_id": event.member_id,
        "external_id": event.external_id,
        "status": event.status,
        "tier": _tier(session, event.member_id),
        "referrer_id": event.referrer_id,
        "enrolled_at": event.enrolled_at,
        "changed": list(event.changed),
    }


@outbound_of.register
def _(event: OrderRecorded, session: Session) -> Outbound:
    status = "pending" if event.pending else "active"
    return ORDER_TYPE, _pick(
        event, "order_id", "channel_id", "points", "activates_at", source="order", status=status
    )


def write_ahead(session: Session, event: OrderRecorded) -> None:
    """Subscriber of an order recorded, before the others: the order's outbox row before
    those of what the order causes (a tier upgrade, a badge), as on PostgreSQL, where the
    accrual's own statement wrote it already (`ORDER_RIDER`)."""
    if not outbox.written_ahead(session, event):
        write(session, event)
        outbox.mark_written(session, event)


def _ride_order(session: Session, event: OrderRecorded) -> dict[str, Any]:
    outbound = outbound_of(event, session)
    assert outbound is not None and outbound[0] == ORDER_TYPE, outbound
    return outbox.riding(session, event, type=ORDER_TYPE, data=outbound[1])


# Every order's outbox row goes in with the accrual's own statement (PostgreSQL), before the
# events the order's subscribers publish (a tier upgrade, a badge).
ORDER_RIDER = ledger_ports.Rider(
    "outbox",
    clause=lambda: outbox.riding_clause(
        ORDER_TYPE, occurred_at=ledger_ports.ACCRUAL_NOW, member_id=ledger_ports.ACCRUAL_MEMBER
    ),
    returning=outbox.notifying,
    parameters=_ride_order,
)


@outbound_of.register
def _(event: BonusCredited, session: Session) -> Outbound:
    return "points.accrued", _pick(
        event,
        "reference",
        "points",
        source="bonus",
        status="active",
        activates_at=event.occurred_at,
    )


@outbound_of.register
def _(event: OrderActivated, session: Session) -> Outbound:
    return ("points.activated", _pick(event, "order_id", "points")) if event.points else None


@outbound_of.register
def _(event: OrderRefunded, session: Session) -> Outbound:
    return "points.reversed", _pick(event, "order_id", "refund_id", "points", "shortfall")


@outbound_of.register
def _(event: PointsTakenBack, session: Session) -> Outbound:
    return "points.reversed", _pick(event, "reference", points=-event.points, shortfall=0)


@outbound_of.register
def _(event: PointsAdjusted, session: Session) -> Outbound:
    return "points.adjusted", _pick(event, "entry_id", "points", "reason")


@outbound_of.register
def _(event: PointsRedeemed, session: Session) -> Outbound:
    return "points.redeemed", _pick(event, "entry_id", "points", "reference")


@outbound_of.register
def _(event: PointsReturned, session: Session) -> Outbound:
    return "points.returned", _pick(event, "entry_id", "points", "reference")


@outbound_of.register
def _(event: PointsExpired, session: Session) -> Outbound:
    return "points.expired", _pick(event, "points", "reason")


@outbound_of.register
def _(event: HoldChanged, session: Session) -> Outbound:
    return HOLD_TYPES[event.status], _pick(event, "hold_id", "points", "captured_points", "status")


@outbound_of.register
def _(event: TierChanged, session: Session) -> Outbound:
    if event.direction == "same":
        return None
    type_ = "tier.upgraded" if event.direction == "up" else "tier.downgraded"
    return type_, _pick(event, "from_tier", "to_tier", "kind", "reason")


@outbound_of.register
def _(event: ClaimChanged, session: Session) -> Outbound:
    return CLAIM_TYPES[event.status], _pick(
        event, "claim_id", "reward_id", "points", "source", "code"
    )


@outbound_of.register
def _(event: BadgeAwarded, session: Session) -> Outbound:
    return "badge.awarded", _pick(
        event, "award_id", "badge_id", "level", "level_name", "bonus_points"
    )


@outbound_of.register
def _(event: ReferralQualified, session: Session) -> Outbound:
    return "referral.qualified", _pick(event, *REFERRAL_FIELDS)


@outbound_of.register
def _(event: ReferralClawedBack, session: Session) -> Outbound:
    return "referral.clawed_back", _pick(event, *REFERRAL_FIELDS)


def _pick(event: Event, *names: str, **values: Any) -> dict[str, Any]:
    """The event's fields ``names``, then ``values``, and the balance after it if it has one
    (the outbox writes what the type's schema documents, null for the rest)."""
    data = {name: getattr(event, name) for name in names} | values
    if isinstance(event, PointsEvent):
        data["balance"] = event.balance.as_dict()
    return data


def _tier(session: Session, member_id: str) -> str | None:
    tier = tiers_service.current_tiers(session, [member_id]).get(member_id)
    return tier.code if tier else None
