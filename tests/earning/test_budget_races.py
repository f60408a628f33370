"""The budgeted campaign's one-statement charge under real concurrency: a manager
changing the campaign while orders charge it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.earning import service
from loyalty.earning.models import Campaign
from loyalty.ledger import service as ledger_service
from loyalty.ledger.models import Order
from loyalty.members import service as members_service
from tests.earning.test_concurrency import double_points
from tests.ledger.conftest import CLIENT, order
from tests.support import behind_a_lock, race

pytestmark = pytest.mark.concurrency


def _change(campaign_id: str, changes: dict[str, Any]) -> Callable[[Session], Any]:
    def run(session: Session) -> Any:
        return service.update_campaign(
            session, campaign_id=campaign_id, changes=changes, actor="manager"
        )

    return run


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"budget": 100}, 50 + 50),  # raised: the row has the room for all 50
        ({"budget": 7}, 50 + 7),  # lowered: what is left of it
        ({"active": False}, 50),  # paused
        # No budget any more: the campaign gives all it gives (it gave nothing until a row
        # without a budget was kept in the locked pricing).
        ({"budget": None}, 50 + 50),
    ],
    ids=["raised", "lowered", "paused", "unbudgeted"],
)
def test_an_order_charging_behind_a_managers_change_prices_with_the_committed_row(
    app: Flask,
    new_session: Callable[[], Session],
    clock: FrozenClock,
    changes: dict[str, Any],
    expected: int,
) -> None:
    """The manager's change holds the campaign's row; the order (its rules read before the
    change committed) waits for that row in its charge, and charges once it has committed.
    The budget is charged in the database: the committed row decides what it gives (the
    charge returns the row's budget; one that is not the budget the order was priced with
    has it priced again, with the rows locked)."""
    session = new_session()
    campaign_id = double_points(session, clock, "Changed", 10)
    member_id = members_service.enroll_member(session, external_id="behind")[0].id
    # The rules (budget 10) are in this process's cache; nothing is spent.
    preview = service.preview_order(session, member_id=member_id, total=5000, currency="USD")
    assert preview.points == 50 + 10
    session.commit()
    changed, points = behind_a_lock(
        app,
        new_session,
        _change(campaign_id, changes),
        lambda s: order(s, member_id, 5000, order_id="behind")["points"],
        statement_like="%campaigns%",
    )
    assert not isinstance(changed, Exception), changed
    assert points == expected, points
    session = new_session()
    row = session.get(Campaign, campaign_id)
    assert row is not None
    if row.budget is not None:
        assert row.spent <= row.budget
    given = session.scalar(select(func.sum(Order.points)).where(Order.member_id == member_id))
    assert given == points


def test_orders_racing_a_budget_raise_spend_exactly_what_they_give(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    """Orders of several members race one another and a manager raising one budget and
    pausing another: every point a campaign gave is charged to it, none beyond its budget."""
    session = new_session()
    big = double_points(session, clock, "Big", 250)
    small = double_points(session, clock, "Small", 130)
    members = [
        members_service.enroll_member(session, external_id=f"rr-{i}")[0].id for i in range(10)
    ]
    session.commit()

    def work(index: int, s: Session) -> Any:
        if index == 10:
            return _change(big, {"budget": 400})(s)
        if index == 11:
            return _change(small, {"budget": 180})(s)
        return order(s, members[index], 10000, order_id=f"rr-{index}")["points"]

    outcomes = race(app, 12, work)
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    session = new_session()
    rows = {c: session.get(Campaign, c) for c in (big, small)}
    for row in rows.values():
        assert row is not None and row.budget is not None
        assert row.spent <= row.budget
    points = [p for p in outcomes[:10]]
    assert sum(points) == 10 * 100 + sum(r.spent for r in rows.values())  # type: ignore[arg-type, union-attr]


def test_racing_orders_charge_each_campaign_exactly_what_their_breakdowns_give(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    """Three budgets with little room, orders of different sizes racing: for every
    campaign, the points the orders' breakdowns credit to it are its spend, within budget."""
    session = new_session()
    budgets = {
        double_points(session, clock, "A", 170): 170,
        double_points(session, clock, "B", 95): 95,
        service.create_campaign(
            session,
            actor="manager",
            name="C",
            starts_at=clock.now() - dt.timedelta(days=1),
            ends_at=clock.now() + dt.timedelta(days=1),
            bonus_points=40,
            budget=130,
        ).id: 130,
    }
    members = [
        members_service.enroll_member(session, external_id=f"ex-{i}")[0].id for i in range(12)
    ]
    session.commit()
    totals = [1500, 9000, 4000, 2500, 7000, 300, 6000, 3500, 8000, 1200, 5000, 2000]

    def work(index: int, s: Session) -> Any:
        result = ledger_service.accrue_order(
            s,
            client_id=CLIENT,
            order_id=f"ex-{index}",
            member_id=members[index],
            total=totals[index],
            currency="USD",
        )
        return result.body

    outcomes = race(app, 12, work)
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    credited = dict.fromkeys(budgets, 0)
    for body in outcomes:
        for part in body["breakdown"]:  # type: ignore[index]
            rule = str(part["rule"]).removeprefix("campaign:")
            if rule in credited:
                credited[rule] += part["points"]
    session = new_session()
    for campaign_id, budget in budgets.items():
        row = session.get(Campaign, campaign_id)
        assert row is not None
        assert row.spent == credited[campaign_id], (campaign_id, row.spent, credited)
        assert row.spent <= budget
    # Every budget had less room than the orders asked of it: all spent.
    assert {c: session.get(Campaign, c).spent for c in budgets} == budgets  # type: ignore[union-attr]
