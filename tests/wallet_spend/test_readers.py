"""Review 6: badges and tiers on spend and orders read the wallet over all time; their values
must be what the orders add up to (as before 2a98305), on both backends."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.community.models import BadgeAward, BadgeProgress
from loyalty.ledger import service
from loyalty.members import service as members_service
from loyalty.tiers import service as tiers
from tests.community.conftest import make_badge
from tests.ledger.conftest import order, settings
from tests.support import START
from tests.wallet_spend.helpers import agrees, summed

DAY = dt.timedelta(days=1)
_n = iter(range(1, 10**9))


def _member(session: Session) -> str:
    return members_service.enroll_member(session, external_id=f"r6r-{next(_n)}")[0].id


def _progress(session: Session, badge_id: str, member_id: str) -> Decimal | None:
    session.expire_all()
    row = session.get(BadgeProgress, (badge_id, member_id))
    return None if row is None else row.value


def _levels(session: Session, badge_id: str, member_id: str) -> list[tuple[int, bool]]:
    return sorted(
        (a.level, a.revoked_at is not None)
        for a in session.scalars(
            select(BadgeAward).where(
                BadgeAward.badge_id == badge_id, BadgeAward.member_id == member_id
            )
        )
    )


def test_r01_badges_on_spend_and_orders_all_time_and_windowed(db: Session) -> None:
    levels = [
        {"name": "1", "threshold": 10, "bonus_points": 3},
        {"name": "2", "threshold": 100, "bonus_points": 0},
    ]
    spend = make_badge(
        db, name="Spend", rule="spend", event_type=None, levels=levels, revoke_on_refund=True
    )
    count = make_badge(
        db,
        name="Orders",
        rule="orders",
        event_type=None,
        levels=[{"name": "1", "threshold": 2, "bonus_points": 1}],
        revoke_on_refund=True,
    )
    windowed = make_badge(
        db,
        name="Spend window",
        rule="spend",
        event_type=None,
        levels=levels,
        starts_at=START - 365 * DAY,
        ends_at=START + 365 * DAY,
    )
    m = _member(db)
    order(db, m, 999, order_id="r01-a")  # 9.99
    assert _progress(db, spend.id, m) == 9
    order(db, m, 1, order_id="r01-b", currency="JPY")  # 10.99
    order(db, m, 1, order_id="r01-c", currency="BHD")  # 10.991
    order(db, m, 0, order_id="r01-z")
    assert _progress(db, spend.id, m) == 10 == _progress(db, windowed.id, m)
    assert _progress(db, count.id, m) == 3
    assert _levels(db, spend.id, m) == [(1, False)]
    assert _levels(db, count.id, m) == [(1, False)]
    service.refund_order(db, order_id="r01-a", refund_id="r01-ra", amount=999)
    assert _progress(db, spend.id, m) == 1 == _progress(db, windowed.id, m)
    assert _progress(db, count.id, m) == 2
    assert _levels(db, spend.id, m) == [(1, True)]
    assert _levels(db, count.id, m) == [(1, False)]
    service.refund_order(db, order_id="r01-b", refund_id="r01-rb", amount=1)
    assert _progress(db, count.id, m) == 1
    assert _levels(db, count.id, m) == [(1, True)]
    spend_now, orders_now = agrees(db, m)
    assert (spend_now, orders_now) == (Decimal("0.001"), 1)


@pytest.mark.parametrize("metric, thresholds", [("spend", (0, 50, 100)), ("orders", (0, 2, 3))])
def test_r02_tiers_on_lifetime_spend_and_orders(
    db: Session, metric: str, thresholds: tuple[int, int, int]
) -> None:
    tiers.update_policy(db, changes={"metric": metric, "window": "lifetime"}, actor="t")
    for code, rank, threshold in zip(("b", "s", "g"), (1, 2, 3), thresholds, strict=True):
        tiers.create_tier(db, code=code, name=code, rank=rank, threshold=threshold, actor="t")
    m = _member(db)
    order(db, m, 4999, order_id=f"r02-{metric}-a")
    view = tiers.get_member_tier(db, m)
    assert view.value == int(summed(db, m)[0] if metric == "spend" else summed(db, m)[1])
    assert view.tier is not None and view.tier.code == "b", view
    order(db, m, 1, order_id=f"r02-{metric}-b")
    assert tiers.get_member_tier(db, m).tier.code == "s"  # type: ignore[union-attr]
    order(db, m, 5000, order_id=f"r02-{metric}-c", currency="JPY")
    view = tiers.get_member_tier(db, m)
    assert view.tier is not None and view.tier.code == "g", (metric, view)
    agrees(db, m)


def test_r03_badge_on_spend_in_the_ledger_measure_equals_the_orders(
    session: Session, clock: FrozenClock
) -> None:
    """`order_measure` over all time (the wallet) and over a window covering everything
    (the orders) agree after back-dated, pending, refunded, multi-currency orders."""
    settings(session, pending_days=7)
    m = _member(session)
    for n, (total, currency, days) in enumerate(
        [(12345, "USD", 30), (77, "JPY", 3), (1999, "BHD", 0), (5, "CLF", 400), (0, "USD", 1)]
    ):
        order(
            session,
            m,
            total,
            order_id=f"r03-{n}",
            currency=currency,
            placed_at=clock.now() - days * DAY,
            backfill=True,
        )
    service.refund_order(session, order_id="r03-0", refund_id="r03-r", amount=12300)
    window = {"member_id": m, "since": START - 10000 * DAY, "until": START + DAY}
    for measure in ("spend", "orders"):
        assert session.scalar(service.order_measure(measure, True, True), window) == session.scalar(
            service.order_measure(measure, False, False), window
        )
    agrees(session, m)
