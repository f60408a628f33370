"""The job settles many wallets at once when their due work is activations and expiries by
date (`settle_due_batch`): what it writes must be what settling each wallet alone writes.
Twin members get the same history; one is settled alone (`settle_wallet`), the other by the
job's batch; their entries, lots, balances and events must be the same."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty.bus import Event, extra_subscribers
from loyalty.clock import FrozenClock
from loyalty.ledger import service
from loyalty.ledger.models import Entry, Lot, Wallet
from tests.ledger.conftest import order, settings
from tests.ledger.test_reconciliation import refund, spend

DAY = dt.timedelta(days=1)


def history(session: Session, member_id: str) -> list[tuple[Any, ...]]:
    """The member's entries as they read (without ids and the member's own references)."""
    rows = session.scalars(
        select(Entry).where(Entry.member_id == member_id).order_by(Entry.id)
    ).all()
    return [
        (
            e.kind,
            e.points,
            e.available_delta,
            e.pending_delta,
            e.counter_account,
            e.counter_amount,
            e.reference_type,
            (e.reason or "").replace(member_id, "M"),
            e.balance_available,
            e.balance_pending,
            e.balance_held,
        )
        for e in rows
    ]


def lots(session: Session, member_id: str) -> list[tuple[Any, ...]]:
    wallet = session.scalar(select(Wallet).where(Wallet.member_id == member_id))
    assert wallet is not None
    found = session.scalars(select(Lot).where(Lot.wallet_id == wallet.id).order_by(Lot.id)).all()
    return [
        (lot.amount, lot.remaining, lot.activated_at, lot.expired_at, lot.expires_at)
        for lot in found
    ]


def test_a_batch_writes_what_settling_each_wallet_alone_writes(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    settings(session, expiry_policy="rolling", expiry_months=1, pending_days=14)
    alone, batched = member(), member()
    for twin in (alone, batched):
        # active long ago, expiring by date
        order(session, twin, 10000, order_id=f"{twin}-old", placed_at=clock.now() - 20 * DAY)
    clock.advance(20 * DAY)
    for twin in (alone, batched):
        spend(session, twin, 30)  # part of the old lot spent: the rest expires
        service.place_hold(session, member_id=twin, points=20, expires_in=400 * 24 * 3600)
        # pending, then active and expired in the same pass (the job comes late)
        order(session, twin, 5000, order_id=f"{twin}-late")
        # pending, wholly refunded meanwhile: its lot activates with nothing in it
        order(session, twin, 7000, order_id=f"{twin}-gone")
        refund(session, f"{twin}-gone", f"{twin}-r", amount=7000)
    settings(session, pending_days=45)
    for twin in (alone, batched):
        # pending for longer: activating in the job's pass, expiring after it
        order(session, twin, 3000, order_id=f"{twin}-fresh")
    # Nothing touches the wallets until the job's pass, 60 days on: late activated (day 14)
    # and expired (a month later) meanwhile, fresh activated (day 45) and still valid.
    clock.advance(60 * DAY)

    seen: list[Event] = []
    with extra_subscribers([(Event, lambda _s, event: seen.append(event))]):
        wallet_id = session.scalar(select(Wallet.id).where(Wallet.member_id == alone))
        assert wallet_id is not None
        service.settle_wallet(session, wallet_id=wallet_id)
        one_by_one = [e for e in seen if e.member_id == alone]
        seen.clear()
        assert service.settle_due_batch(session, batch_size=50) == 1  # the other twin
        in_bulk = [e for e in seen if e.member_id == batched]

    assert history(session, batched) == history(session, alone)
    assert lots(session, batched) == lots(session, alone)
    assert service.get_balance(session, batched) == service.get_balance(session, alone)
    assert [type(e).__name__ for e in in_bulk] == [type(e).__name__ for e in one_by_one]
    assert [getattr(e, "points", None) for e in in_bulk] == [
        getattr(e, "points", None) for e in one_by_one
    ]
    kinds = [row[0] for row in history(session, batched)]
    # late and fresh activated; old (what was not spent or held) and late expired
    assert kinds.count("activation") == 2 and kinds.count("expiry") == 2
