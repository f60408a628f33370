"""Review 8: twins, one settled alone (`settle_wallet`), one by the job's batch in one
statement; everything they are left with must be the same."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.ledger import service
from tests.ledger.conftest import order, settings
from tests.ledger.test_reconciliation import refund, spend
from tests.settle_in_bulk.helpers import (
    DAY,
    assert_same,
    in_one_statement,
    last_seq,
    outbox,
    statements,
    wallet_of,
)


def settle_twins(
    session: Session, alone: list[str], batched: list[str], actor: str = "jobs"
) -> int:
    since = last_seq(session)
    for member_id in alone:
        service.settle_wallet(session, wallet_id=wallet_of(session, member_id).id, actor=actor)
    with statements(session) as sent:
        settled = service.settle_due_batch(session, batch_size=50, actor=actor)
    assert in_one_statement(sent)
    for one, other in zip(alone, batched, strict=True):
        assert_same(session, one, other, since)
    return settled


def test_ties_under_a_calendar_policy_many_lots_same_moments(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    settings(
        session, expiry_policy="calendar", expiry_months=1, expiry_period="month", pending_days=14
    )
    alone, batched = member(), member()
    for twin in (alone, batched):
        for n in range(6):  # same placed_at: equal activates_at and expires_at
            order(session, twin, 1000 * (6 - n), order_id=f"{twin}-{n}")
    clock.advance(15 * DAY)
    for twin in (alone, batched):
        for n in range(3):
            order(session, twin, 700 + n, order_id=f"{twin}-b{n}")
    clock.advance(80 * DAY)
    assert settle_twins(session, [alone], [batched], actor="ops-robot") == 1


def test_bonus_lots_and_zero_point_orders(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    settings(session, expiry_policy="rolling", expiry_months=1, pending_days=14)
    alone, batched = member(), member()
    for twin in (alone, batched):
        service.credit_bonus(session, member_id=twin, points=40, reason="gift", actor="x")
        order(session, twin, 50, order_id=f"{twin}-zero")  # no points
        order(session, twin, 0, order_id=f"{twin}-nothing")
        order(session, twin, 4000, order_id=f"{twin}-real")
        service.credit_bonus(
            session,
            member_id=twin,
            points=7,
            reason="gift",
            actor="x",
            reference=("badge", f"b-{twin}"),
        )
    clock.advance(20 * DAY)
    for twin in (alone, batched):
        service.credit_bonus(session, member_id=twin, points=3, reason="later", actor="x")
    clock.advance(40 * DAY)
    settle_twins(session, [alone], [batched])


def test_a_lot_partly_spent_and_partly_held_expires(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    settings(session, expiry_policy="rolling", expiry_months=1, pending_days=14)
    alone, batched = member(), member()
    for twin in (alone, batched):
        order(session, twin, 10000, order_id=f"{twin}-a", placed_at=clock.now() - 20 * DAY)
        order(session, twin, 10000, order_id=f"{twin}-b", placed_at=clock.now() - 20 * DAY)
    clock.advance(DAY)
    for twin in (alone, batched):
        spend(session, twin, 130)
        service.place_hold(session, member_id=twin, points=50, expires_in=400 * 24 * 3600)
        service.place_hold(session, member_id=twin, points=5, expires_in=300 * 24 * 3600)
    clock.advance(60 * DAY)
    settle_twins(session, [alone], [batched])


def test_nothing_moves_but_the_next_due_moment(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    settings(session, expiry_policy="rolling", expiry_months=1, pending_days=14)
    alone, batched = member(), member()
    for twin in (alone, batched):
        order(session, twin, 10000, order_id=f"{twin}-a", placed_at=clock.now() - 20 * DAY)
        order(session, twin, 3000, order_id=f"{twin}-b", placed_at=clock.now() - 20 * DAY)
    clock.advance(DAY)
    for twin in (alone, batched):
        spend(session, twin, 100)  # the earliest-expiring lot is spent whole
    clock.advance(60 * DAY)
    # ... and refunded wholly before its activation
    for twin in (alone, batched):
        order(session, twin, 9000, order_id=f"{twin}-c")
        refund(session, f"{twin}-c", f"{twin}-rc", amount=9000)
    clock.advance(15 * DAY)
    settle_twins(session, [alone], [batched])


@pytest.mark.parametrize("policy", ["none", "calendar"])
def test_policies_without_dates_or_by_calendar(
    session: Session, member: Callable[..., str], clock: FrozenClock, policy: str
) -> None:
    settings(session, expiry_policy=policy, expiry_months=1, pending_days=14)
    alone, batched = member(), member()
    for twin in (alone, batched):
        order(session, twin, 10000, order_id=f"{twin}-a")
        order(session, twin, 3000, order_id=f"{twin}-b")
    clock.advance(15 * DAY)
    settings(session, pending_days=3)
    for twin in (alone, batched):
        order(session, twin, 2000, order_id=f"{twin}-c")
    clock.advance(45 * DAY)
    settle_twins(session, [alone], [batched])


def test_several_wallets_of_different_mixes_and_the_order_of_their_events(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    """The batch's outbox rows by seq: the wallets in member-id order (`settle_due_batch`'s
    order, the Python path's), each wallet's events in its own order."""
    settings(session, expiry_policy="rolling", expiry_months=1, pending_days=14)
    pairs = [(member(), member()) for _ in range(5)]
    for index, (a, b) in enumerate(pairs):
        for twin in (a, b):
            if index % 2 == 0:
                order(
                    session, twin, 10000, order_id=f"{twin}-old", placed_at=clock.now() - 20 * DAY
                )
            for n in range(index + 1):
                order(session, twin, 1000 + 100 * n, order_id=f"{twin}-{n}")
    clock.advance(DAY)
    for index, (a, b) in enumerate(pairs):
        if index % 2 == 0:
            for twin in (a, b):
                spend(session, twin, 10 * (index + 1))
    clock.advance(60 * DAY)
    alone = [a for a, _ in pairs]
    batched = [b for _, b in pairs]
    since = last_seq(session)
    assert settle_twins(session, alone, batched) == 5
    # across the batch
    from sqlalchemy import select

    from loyalty.events.models import OutboxEvent

    rows = session.execute(
        select(OutboxEvent.member_id, OutboxEvent.type, OutboxEvent.seq)
        .where(OutboxEvent.seq > since, OutboxEvent.member_id.in_(batched))
        .order_by(OutboxEvent.seq)
    ).all()
    expected = [(m, row[0]) for m in sorted(batched) for row in outbox(session, m, since)]
    assert [(r.member_id, r.type) for r in rows] == expected


def test_the_demo_programme_orders_with_items_tiers_badges_partial_refunds(
    session: Session, member: Callable[..., str], clock: FrozenClock, programme: None
) -> None:
    settings(session, expiry_policy="rolling", expiry_months=1, pending_days=14)
    alone, batched = member(), member()
    items = [
        {"sku": "A", "category": "electronics", "quantity": 2, "unit_price": 25000},
        {"sku": "B", "category": "gift_cards", "quantity": 1, "unit_price": 5000},
    ]
    for twin in (alone, batched):
        for n in range(4):
            order(session, twin, 55000, order_id=f"{twin}-{n}", items=items)
        refund(session, f"{twin}-1", f"{twin}-r1", amount=20000)
    clock.advance(DAY)
    for twin in (alone, batched):
        order(session, twin, 12345, order_id=f"{twin}-x", placed_at=clock.now() - 20 * DAY)
    clock.advance(60 * DAY)
    settle_twins(session, [alone], [batched])


def test_no_actor(session: Session, member: Callable[..., str], clock: FrozenClock) -> None:
    settings(session, expiry_policy="rolling", expiry_months=1, pending_days=14)
    alone, batched = member(), member()
    for twin in (alone, batched):
        order(session, twin, 10000, order_id=f"{twin}-old", placed_at=clock.now() - 20 * DAY)
        order(session, twin, 3000, order_id=f"{twin}-new")
    clock.advance(60 * DAY)
    settle_twins(session, [alone], [batched], actor=None)  # type: ignore[arg-type]
