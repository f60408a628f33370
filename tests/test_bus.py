"""Domain events: published inside the unit of work, to the one ordered subscriber table."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty import bus, wiring
from loyalty.clock import FrozenClock
from loyalty.community import service as community_service
from loyalty.community.events import BadgeAwarded
from loyalty.ledger import service as ledger
from loyalty.ledger.events import (
    BonusCredited,
    OrderActivated,
    OrderRecorded,
    OrderRefunded,
)
from loyalty.members import service as members_service
from loyalty.members.events import MemberEnrolled
from loyalty.referrals.events import ReferralClawedBack, ReferralQualified
from loyalty.tiers import service as tiers_service
from loyalty.tiers.events import TierChanged
from loyalty.tiers.models import TierChange
from tests.support import _invariants_hold, clock

__all__ = ["_invariants_hold", "clock"]  # fixtures: the ledger's invariants after each test


@dataclass(frozen=True, kw_only=True)
class Pinged(bus.Event):
    n: int


def test_the_table_says_who_reacts_to_what_in_order(app: Flask) -> None:
    table = [(kind.__name__, f"{f.__module__}.{f.__name__}") for kind, f in wiring.SUBSCRIBERS]
    assert table == [
        ("MemberEnrolled", "loyalty.ledger.service.postings.on_member_enrolled"),
        ("MemberEnrolled", "loyalty.referrals.service.on_member_enrolled"),
        ("OrderRecorded", "loyalty.events.writer.write_ahead"),
        ("OrderRecorded", "loyalty.tiers.service.on_points_earned"),
        ("OrderRecorded", "loyalty.community.service.subscribers.on_order_recorded"),
        ("BonusCredited", "loyalty.tiers.service.on_points_earned"),
        ("OrderActivated", "loyalty.referrals.service.on_order_activated"),
        ("OrderRefunded", "loyalty.referrals.service.on_order_refunded"),
        ("OrderRefunded", "loyalty.community.service.subscribers.on_order_refunded"),
        ("ReferralQualified", "loyalty.community.service.subscribers.on_referral_qualified"),
        ("ReferralClawedBack", "loyalty.community.service.subscribers.on_referral_clawed_back"),
        ("Event", "loyalty.events.writer.write"),
        ("ClaimChanged", "loyalty.billing.service.promotions.on_claim_changed"),
    ]
    # Every subscriber is reached by the events of its row (and of its subclasses), in the
    # table's order: the outbox writer, subscribed to every event, comes last.
    assert bus.subscribers(OrderRefunded) == [
        f for kind, f in wiring.SUBSCRIBERS if issubclass(OrderRefunded, kind)
    ]
    assert bus.subscribers(OrderRefunded)[-1].__module__ == "loyalty.events.writer"
    assert [f.__module__ for f in bus.subscribers(MemberEnrolled)][:2] == [
        "loyalty.ledger.service.postings",
        "loyalty.referrals.service",
    ]
    assert {ReferralQualified, ReferralClawedBack, OrderActivated} <= {
        kind for kind, _ in wiring.SUBSCRIBERS
    }


def test_subscribers_run_in_order_and_a_subclass_reaches_its_bases_subscribers(
    app: Flask, session: Session
) -> None:
    seen: list[str] = []
    now = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    with bus.extra_subscribers(
        [
            (Pinged, lambda _, e: seen.append(f"first {e.n}")),
            (bus.Event, lambda _, e: seen.append(f"any {type(e).__name__}")),
            (Pinged, lambda _, e: seen.append(f"last {e.n}")),
        ]
    ):
        bus.publish(session, Pinged(occurred_at=now, member_id=None, n=1))
    assert seen == ["first 1", "any Pinged", "last 1"]
    bus.publish(session, Pinged(occurred_at=now, member_id=None, n=2))  # the extras are gone
    assert seen == ["first 1", "any Pinged", "last 1"]


def test_a_subscriber_cannot_publish_what_it_handles(app: Flask, session: Session) -> None:
    now = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)

    def again(session: Session, event: Pinged) -> None:
        bus.publish(session, Pinged(occurred_at=now, member_id=None, n=event.n + 1))

    with bus.extra_subscribers([(Pinged, again)]), pytest.raises(RuntimeError, match="loop"):
        bus.publish(session, Pinged(occurred_at=now, member_id=None, n=1))


def test_the_table_takes_only_event_classes(app: Flask) -> None:
    with pytest.raises(TypeError), bus.extra_subscribers([(int, print)]):  # type: ignore[list-item]
        pass


def test_an_event_and_its_effects_roll_back_together(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    """A subscriber's failure undoes the whole call: the order, its points, its tier row."""
    member, _ = members_service.enroll_member(session, external_id="rollback")
    tiers_service.create_tier(
        session, code="silver", name="Silver", rank=1, threshold=10, actor="t"
    )

    def fail(session: Session, event: OrderRecorded) -> None:
        raise RuntimeError("subscriber failed")

    with bus.extra_subscribers([(OrderRecorded, fail)]), pytest.raises(RuntimeError):
        ledger.accrue_order(
            session, member_id=member.id, order_id="o-1", total=10000, currency="USD"
        )
    assert ledger.get_balance(session, member.id).pending == 0
    assert session.scalars(select(TierChange)).all() == []
    with pytest.raises(Exception, match="o-1"):
        ledger.get_order(session, order_id="o-1")


def test_an_order_that_upgrades_and_earns_a_badge_tells_it_in_order(
    app: Flask, session: Session, clock: FrozenClock
) -> None:
    told: list[Any] = []
    member, _ = members_service.enroll_member(session, external_id="told")
    tiers_service.create_tier(
        session, code="silver", name="Silver", rank=1, threshold=50, actor="t"
    )
    badge = community_service.create_badge(
        session,
        actor="t",
        name="Big spender",
        rule="spend",
        levels=[{"name": "100", "threshold": 100, "bonus_points": 40}],
    )
    with bus.extra_subscribers([(bus.Event, lambda _, event: told.append(event))]):
        ledger.accrue_order(
            session, member_id=member.id, order_id="o-2", total=10000, currency="USD"
        )
    kinds = [type(event).__name__ for event in told]
    assert kinds == ["TierChanged", "BonusCredited", "BadgeAwarded", "OrderRecorded"]
    tier, bonus, award, order = told
    assert isinstance(tier, TierChanged) and (tier.to_tier, tier.direction) == ("silver", "up")
    assert isinstance(bonus, BonusCredited) and bonus.points == 40
    assert bonus.reference is not None and bonus.reference.startswith("badge:")
    assert isinstance(award, BadgeAwarded) and (award.badge_id, award.level) == (badge.id, 1)
    assert isinstance(order, OrderRecorded)
    assert (order.order_id, order.points, order.pending) == ("o-2", 100, True)
    assert order.balance.pending == 100 and bonus.balance.available == 40
    assert {event.member_id for event in told} == {member.id}
    assert all(event.occurred_at == clock.now() for event in told)
    # The extra subscriber ran last: after tiers and community, which published the rest.
    assert Decimal(order.points) == Decimal(100)


def test_refund_and_activation_are_told(app: Flask, session: Session, clock: FrozenClock) -> None:
    told: list[Any] = []
    member, _ = members_service.enroll_member(session, external_id="refund-told")
    with bus.extra_subscribers([(bus.Event, lambda _, event: told.append(event))]):
        ledger.accrue_order(
            session, member_id=member.id, order_id="o-3", total=10000, currency="USD"
        )
        clock.advance(dt.timedelta(days=15))
        ledger.get_balance(session, member.id)  # a read settles: the points activate
        ledger.refund_order(session, order_id="o-3", refund_id="r-1", amount=2500)
    activated = [e for e in told if isinstance(e, OrderActivated)]
    refunded = [e for e in told if isinstance(e, OrderRefunded)]
    assert [(e.order_id, e.points, e.balance.available) for e in activated] == [("o-3", 100, 100)]
    assert [(e.refund_id, e.points, e.amount_refunded, e.order_total) for e in refunded] == [
        ("r-1", 25, 2500, 10000)
    ]
    assert refunded[0].balance.available == 75
