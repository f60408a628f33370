"""The budgeted campaign's one-statement charge (`_charge`, `_charge_locked`,
`_SPENT`): exact spend, exact points, fresh ORM objects, previews, SQLite."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
from flask import Flask
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock, use_clock
from loyalty.db import get_database, request_transaction, unit_of_work
from loyalty.earning import service
from loyalty.earning.models import Campaign
from loyalty.events.models import OutboxEvent
from loyalty.ledger import service as ledger_service
from loyalty.ledger.models import Order
from loyalty.members import service as members_service
from loyalty.tiers import service as tiers_service
from tests.earning.test_service import DAY, campaign
from tests.ledger.conftest import START, order


def test_a_budget_raised_after_the_rules_were_read_gives_what_the_row_allows(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    """The rules in the process's cache say budget 10; the row (a change committed between
    the order's read of the rules and its charge) says 100. The charge is made in the
    database, so the row's budget should decide (as it did when the row was read)."""
    limited = campaign(session, budget=10)
    mid = member()
    assert order(session, mid, 100)["points"] == 2  # the rules are in the process's cache
    session.execute(update(Campaign).where(Campaign.id == limited.id).values(budget=100))
    session.commit()
    assert order(session, mid, 5000)["points"] == 50 + 50
    session.expire_all()
    assert service.get_campaign(session, limited.id).spent == 51


def test_a_budget_lowered_after_the_rules_were_read_is_not_overspent(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    limited = campaign(session, budget=100)
    mid = member()
    assert order(session, mid, 100)["points"] == 2
    session.execute(update(Campaign).where(Campaign.id == limited.id).values(budget=7))
    session.commit()
    assert order(session, mid, 5000)["points"] == 50 + 6
    session.expire_all()
    assert service.get_campaign(session, limited.id).spent == 7


def test_a_campaign_ended_or_deleted_after_the_rules_were_read_gives_nothing(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    ended = campaign(session, name="Ended", budget=100)
    mid = member()
    assert order(session, mid, 1000)["points"] == 20
    session.execute(update(Campaign).where(Campaign.id == ended.id).values(ends_at=START))
    session.commit()
    assert order(session, mid, 1000)["points"] == 10
    session.expire_all()
    assert service.get_campaign(session, ended.id).spent == 10


def test_the_sessions_campaign_object_shows_the_charge(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    """In one request transaction (no expiry at the units' ends), the Campaign object read
    before the orders shows what the Core UPDATE charged, on both charging paths."""
    first, second = sorted(
        (campaign(session, name="One", budget=100), campaign(session, name="Two", budget=15)),
        key=lambda row: row.id,
    )
    mid = member()
    with request_transaction(session):
        loaded = [session.get(Campaign, first.id), session.get(Campaign, second.id)]
        assert [row.spent for row in loaded] == [0, 0]  # type: ignore[union-attr]
        assert order(session, mid, 1000)["points"] == 30
        assert [row.spent for row in loaded] == [10, 10]  # type: ignore[union-attr]
        assert order(session, mid, 1000)["points"] == 25  # the second's last 5, repriced
        assert [row.spent for row in loaded] == [20, 15]  # type: ignore[union-attr]
        assert order(session, mid, 1000)["points"] == 20
        assert [row.spent for row in loaded] == [30, 15]  # type: ignore[union-attr]
    session.expire_all()
    assert service.get_campaign(session, first.id).spent == 30
    assert service.get_campaign(session, second.id).spent == 15


def test_previews_match_the_orders_with_budgets_partly_spent(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    campaign(session, name="One", budget=25)
    campaign(session, name="Two", budget=12, bonus_points=5, multiplier=None)
    mid = member()
    for total in (1000, 1000, 700, 1000, 1000):
        preview = service.preview_order(session, member_id=mid, total=total, currency="USD")
        real = order(session, mid, total)
        assert (real["points"], real["description"]) == (preview.points, preview.describe())


@pytest.fixture
def sqlite_session(sqlite_app: Flask) -> Iterator[Session]:
    use_clock(sqlite_app, FrozenClock(START))
    with sqlite_app.app_context():
        session = get_database(sqlite_app).sessionmaker()
        yield session
        session.close()
    use_clock(sqlite_app, None)


def test_a_budgeted_campaign_on_sqlite(sqlite_session: Session) -> None:
    session = sqlite_session
    tiers_service.create_tier(session, code="b", name="B", rank=1, threshold=0, actor="t")
    tiers_service.create_tier(session, code="s", name="S", rank=2, threshold=30, actor="t")
    limited = service.create_campaign(
        session,
        actor="manager",
        name="Double",
        starts_at=START - DAY,
        ends_at=START + DAY,
        multiplier=Decimal(2),
        budget=25,
    )
    mid = members_service.enroll_member(session, external_id="lite")[0].id
    points = [
        ledger_service.accrue_order(
            session, member_id=mid, order_id=f"l-{i}", total=1000, currency="USD"
        ).body["points"]
        for i in range(4)
    ]
    assert points == [20, 20, 15, 10]
    session.expire_all()
    assert service.get_campaign(session, limited.id).spent == 25
    types = list(
        session.scalars(
            select(OutboxEvent.type).where(OutboxEvent.member_id == mid).order_by(OutboxEvent.seq)
        )
    )
    assert types.count("points.accrued") == 4
    assert types.index("points.accrued") < types.index("tier.upgraded"), types
    assert session.scalar(select(func.sum(Order.points)).where(Order.member_id == mid)) == 65


def test_an_order_placed_in_another_offset_is_charged_in_the_window(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    """placed_at with a non-UTC offset, inside the window by instant."""
    limited = campaign(session, budget=100, starts_at=START - dt.timedelta(hours=1))
    mid = member()
    tokyo = dt.timezone(dt.timedelta(hours=9))
    placed = (START - dt.timedelta(minutes=30)).astimezone(tokyo)
    assert order(session, mid, 1000, placed_at=placed)["points"] == 20
    session.expire_all()
    assert service.get_campaign(session, limited.id).spent == 10


def test_a_budget_spent_in_a_unit_rolled_back_inside_a_request_is_not_remembered_spent(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    """A unit of work inside a request transaction is a savepoint: the orders in it spend the
    budget and find it spent, then the unit fails and the request commits without them."""
    campaign(session, budget=10)
    mid = member()
    with request_transaction(session):
        with pytest.raises(LookupError), unit_of_work(session):
            assert order(session, mid, 1000)["points"] == 20  # the whole budget
            assert order(session, mid, 1000)["points"] == 10  # spent, in the savepoint
            raise LookupError("the unit fails: its savepoint rolls back")
        assert order(session, mid, 1000)["points"] == 20
    assert order(session, mid, 1000)["points"] == 10
    session.expire_all()
    assert service.list_campaigns(session).items[0].spent == 10  # type: ignore[attr-defined]


def test_a_budget_spent_in_a_savepoint_rolled_back_is_not_remembered_spent(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    """The same with a bare savepoint (session.begin_nested) rolled back inside the request:
    `after_commit` work queued in it goes with it (`loyalty.db`'s savepoint bookkeeping)."""
    limited = campaign(session, budget=10)
    mid = member()
    with request_transaction(session):
        savepoint = session.begin_nested()
        assert order(session, mid, 1000)["points"] == 20
        assert order(session, mid, 1000)["points"] == 10
        savepoint.rollback()
    session.expire_all()
    assert service.get_campaign(session, limited.id).spent == 0
    assert order(session, mid, 1000)["points"] == 20


def _window_orders(session: Session, member_id: str) -> list[int]:
    """Orders placed at the window's start, just before its end and at its end."""
    starts, ends = START - DAY, START - DAY + dt.timedelta(hours=1)
    service.create_campaign(
        session,
        actor="manager",
        name="Hour",
        starts_at=starts,
        ends_at=ends,
        multiplier=Decimal(2),
        budget=1000,
    )
    return [
        ledger_service.accrue_order(
            session,
            member_id=member_id,
            order_id=f"w-{index}",
            total=1000,
            currency="USD",
            placed_at=placed,
        ).body["points"]
        for index, placed in enumerate((starts, ends - dt.timedelta(microseconds=1), ends))
    ]


def test_the_charge_keeps_the_windows_bounds_on_postgresql(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    assert _window_orders(session, member()) == [20, 20, 10]


def test_the_charge_keeps_the_windows_bounds_on_sqlite(sqlite_session: Session) -> None:
    mid = members_service.enroll_member(sqlite_session, external_id="bounds")[0].id
    assert _window_orders(sqlite_session, mid) == [20, 20, 10]


def test_a_campaign_deleted_after_the_rules_were_read_gives_nothing_and_the_other_is_charged(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    """The second budget (in id order) is gone when the order charges it: the first, charged
    already, is priced again with the rows locked and keeps exactly what it gives."""
    first, second = sorted(
        (campaign(session, name="One", budget=100), campaign(session, name="Two", budget=100)),
        key=lambda row: row.id,
    )
    mid = member()
    preview = service.preview_order(session, member_id=mid, total=1000, currency="USD")
    assert preview.points == 30  # the rules are in the process's cache
    session.execute(delete(Campaign).where(Campaign.id == second.id))
    session.commit()
    assert order(session, mid, 1000)["points"] == 20
    session.expire_all()
    assert service.get_campaign(session, first.id).spent == 10
