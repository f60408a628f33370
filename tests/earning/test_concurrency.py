"""Campaign budgets and per-member caps under concurrent orders, on real PostgreSQL
connections and threads."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.db import get_database
from loyalty.earning import service
from loyalty.earning.models import Campaign
from loyalty.ledger import service as ledger_service
from loyalty.ledger.models import Order
from loyalty.members import service as members_service
from tests.ledger.conftest import CLIENT
from tests.ledger.test_concurrency import WORKERS
from tests.support import race

pytestmark = pytest.mark.concurrency


def _session(app: Flask) -> Session:
    return get_database(app).sessionmaker()


def double_points(session: Session, clock: FrozenClock, name: str, budget: int) -> str:
    """A campaign for everyone, running now, that doubles points up to ``budget``: its id."""
    campaign = service.create_campaign(
        session,
        actor="manager",
        name=name,
        starts_at=clock.now() - dt.timedelta(days=1),
        ends_at=clock.now() + dt.timedelta(days=1),
        multiplier=Decimal(2),
        budget=budget,
    )
    return campaign.id


def orders_of_new_members(app: Flask, prefix: str) -> list[int | Exception]:
    """Enroll WORKERS members, then race an order of 100 USD of each: the points each earned
    (or the error it raised)."""
    session = _session(app)
    members = [
        members_service.enroll_member(session, external_id=f"{prefix}-{i}")[0].id
        for i in range(WORKERS)
    ]
    session.close()

    def place(index: int, s: Session) -> int:
        result = ledger_service.accrue_order(
            s,
            client_id=CLIENT,
            order_id=f"{prefix}-{index}",
            member_id=members[index],
            total=10000,
            currency="USD",
        )
        return int(result.body["points"])

    return race(app, WORKERS, place)


def test_a_campaign_budget_is_never_overspent(app: Flask, clock: FrozenClock) -> None:
    with app.app_context():
        session = _session(app)
        campaign_id = double_points(session, clock, "First come", 250)
        session.close()
        points = orders_of_new_members(app, "c")
        assert all(isinstance(p, int) for p in points), points
        session = _session(app)
        # 12 orders of base 100; the campaign adds 100, 100, then the last 50, then nothing.
        assert sorted(points, reverse=True)[:4] == [200, 200, 150, 100]
        assert sum(points) == WORKERS * 100 + 250  # type: ignore[arg-type]
        assert session.get(Campaign, campaign_id).spent == 250  # type: ignore[union-attr]
        session.close()


def test_two_budgets_charged_by_concurrent_orders_are_spent_exactly(
    app: Flask, clock: FrozenClock
) -> None:
    """Each order charges both campaigns (in id order); the orders that find a budget short
    lock both rows and price again. Nobody deadlocks for long, nothing is overspent."""
    with app.app_context():
        session = _session(app)
        budgets = {
            double_points(session, clock, name, budget): budget
            for name, budget in (("Big", 250), ("Small", 130))
        }
        session.close()
        points = orders_of_new_members(app, "two")
        assert all(isinstance(p, int) for p in points), points
        assert sum(points) == WORKERS * 100 + 250 + 130  # type: ignore[arg-type]
        session = _session(app)
        for campaign_id, budget in budgets.items():
            assert session.get(Campaign, campaign_id).spent == budget  # type: ignore[union-attr]
        session.close()


def test_a_daily_cap_holds_under_concurrent_orders(app: Flask, clock: FrozenClock) -> None:
    with app.app_context():
        session = _session(app)
        service.update_earning_settings(session, changes={"daily_cap": 350}, actor="manager")
        member_id = members_service.enroll_member(session, external_id="capped")[0].id
        session.close()

        def place(index: int, s: Session) -> int:
            result = ledger_service.accrue_order(
                s,
                client_id=CLIENT,
                order_id=f"cap-{index}",
                member_id=member_id,
                total=10000,
                currency="USD",
            )
            return int(result.body["points"])

        points = race(app, WORKERS, place)
        assert all(isinstance(p, int) for p in points), points
        assert sum(points) == 350  # type: ignore[arg-type]
        assert sorted(points, reverse=True)[:4] == [100, 100, 100, 50]
        session = _session(app)
        total = session.scalar(select(func.sum(Order.points)).where(Order.member_id == member_id))
        assert total == 350
        assert ledger_service.get_balance(session, member_id).pending == 350
        session.close()
