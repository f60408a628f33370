"""The order badge's Core statement (c75f3ae) on the ORM's path: a wallet in debt, orders
written through the ORM before the measure (a review's probe)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.community.models import BadgeAward
from loyalty.ledger import service
from loyalty.members import service as members_service
from tests.community.conftest import make_badge
from tests.ledger.conftest import order, settings
from tests.ledger.test_service import refund

DAY = dt.timedelta(days=1)


def test_an_order_of_a_member_in_debt_counts_for_the_orders_badge(
    session: Session, clock: FrozenClock
) -> None:
    """A wallet in debt (allow_negative refund of spent points) takes the ORM path for its
    next orders; the Core badge measure must still count the order being recorded."""
    badge = make_badge(
        session,
        name="Regular buyer",
        rule="orders",
        event_type=None,
        levels=[{"name": "2", "threshold": 2, "bonus_points": 7}],
    )
    settings(session, refund_policy="allow_negative")
    m = members_service.enroll_member(session, external_id="r5-debt")[0].id
    order(session, m, 10000, order_id="r5-A", placed_at=clock.now() - 20 * DAY)
    service.redeem(session, member_id=m, points=80)
    refunded = refund(session, "r5-A", "r5-R1", amount=10000)
    assert refunded["balance"] == {"available": -80, "pending": 0, "held": 0}
    order(session, m, 5000, order_id="r5-B")
    assert not list(session.scalars(select(BadgeAward).where(BadgeAward.member_id == m)))
    order(session, m, 5000, order_id="r5-C")
    awards = list(session.scalars(select(BadgeAward).where(BadgeAward.member_id == m)))
    assert [a.badge_id for a in awards] == [badge.id]
