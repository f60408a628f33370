"""The job's settlement in one statement (PostgreSQL, `loyalty.ledger.service._bulk`): a
batch's activations and expiries by date written by PostgreSQL from the lots. What it writes
must be what settling each wallet alone writes (`settle_wallet`, a lot at a time in Python):
entries, allocations, lots, balances, the next due moment, the outbox rows in their order, and
the referral an activation qualifies."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty.bus import Event, extra_subscribers
from loyalty.clock import FrozenClock
from loyalty.events.models import OutboxEvent
from loyalty.ledger import service
from loyalty.ledger.models import Entry
from tests.ledger.conftest import order, settings
from tests.ledger.test_due_in_bulk import history, lots
from tests.ledger.test_reconciliation import refund, spend
from tests.referrals.conftest import make_member, place_order, referral_of, terms
from tests.settle_in_bulk.helpers import (
    allocations,
    in_one_statement,
    last_seq,
    outbox,
    statements,
    wallet_of,
)

DAY = dt.timedelta(days=1)
ULID = re.compile(r"^evt_[0-9A-HJKMNP-TV-Z]{26}$")


def twin_histories(session: Session, clock: FrozenClock, twins: tuple[str, str]) -> None:
    """The same history for both twins, due work left for a job that comes late: an old lot
    partly spent and expiring, a late one activating and expiring in the same pass, one wholly
    refunded (it activates with nothing in it), a fresh one activating and still valid, a
    hold that runs out after the pass, a lot still pending after it."""
    settings(session, expiry_policy="rolling", expiry_months=1, pending_days=14)
    for twin in twins:
        order(session, twin, 10000, order_id=f"{twin}-old", placed_at=clock.now() - 20 * DAY)
    clock.advance(20 * DAY)
    for twin in twins:
        spend(session, twin, 30)
        service.place_hold(session, member_id=twin, points=20, expires_in=400 * 24 * 3600)
        order(session, twin, 5000, order_id=f"{twin}-late")
        order(session, twin, 7000, order_id=f"{twin}-gone")
        refund(session, f"{twin}-gone", f"{twin}-r", amount=7000)
    settings(session, pending_days=45)
    for twin in twins:
        order(session, twin, 3000, order_id=f"{twin}-fresh")
    settings(session, pending_days=90)
    for twin in twins:
        order(session, twin, 2000, order_id=f"{twin}-fresher")  # still pending after the pass
    clock.advance(60 * DAY)


def test_one_statement_writes_what_settling_each_wallet_alone_writes(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    alone, batched = member(), member()
    twin_histories(session, clock, (alone, batched))
    since = last_seq(session)

    service.settle_wallet(session, wallet_id=wallet_of(session, alone).id)
    with statements(session) as sent:
        assert service.settle_due_batch(session, batch_size=50) == 1  # the other twin
    assert in_one_statement(sent)

    assert history(session, batched) == history(session, alone)
    assert allocations(session, batched) == allocations(session, alone)
    assert lots(session, batched) == lots(session, alone)
    assert service.get_balance(session, batched) == service.get_balance(session, alone)
    mine, theirs = wallet_of(session, batched), wallet_of(session, alone)
    assert (mine.next_due_at, mine.updated_at) == (theirs.next_due_at, theirs.updated_at)
    assert mine.next_due_at is not None and mine.next_due_at > clock.now()
    assert outbox(session, batched, since) == outbox(session, alone, since)
    assert [row[0] for row in outbox(session, batched, since)] == [
        "points.activated",  # late
        "points.activated",  # fresh ("gone" activated nothing: no outbox row)
        "points.expired",  # old's rest and late, in one event
    ]
    kinds = [row[0] for row in history(session, batched)]
    assert kinds.count("activation") == 2 and kinds.count("expiry") == 2


def test_each_wallet_of_a_batch_gets_its_own_running_balances_ids_and_events(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    settings(session, expiry_policy="rolling", expiry_months=1, pending_days=14)
    members = [member() for _ in range(3)]
    for index, member_id in enumerate(members):
        for number in range(index + 2):
            order(session, member_id, 1000 * (number + 1), order_id=f"{member_id}-{number}")
    clock.advance(15 * DAY)
    since = last_seq(session)
    with statements(session) as sent:
        assert service.settle_due_batch(session, batch_size=50) == 3
    assert in_one_statement(sent)

    for index, member_id in enumerate(members):
        entries = session.scalars(
            select(Entry).where(Entry.member_id == member_id).order_by(Entry.id)
        ).all()
        activations = [e for e in entries if e.kind == "activation"]
        assert [e.points for e in activations] == [10 * (n + 1) for n in range(index + 2)]
        # each entry's balances are the wallet's right after it, in id order
        running = 0
        for entry in activations:
            running += entry.points
            assert (entry.balance_available, entry.balance_pending) == (
                running,
                sum(10 * (n + 1) for n in range(index + 2)) - running,
            )
        rows = session.scalars(
            select(OutboxEvent)
            .where(OutboxEvent.member_id == member_id, OutboxEvent.seq > since)
            .order_by(OutboxEvent.seq)
        ).all()
        assert [row.data["balance"]["available"] for row in rows] == [
            e.balance_available for e in activations
        ]
        assert all(ULID.match(row.id) for row in rows)
        assert all(row.created_at == clock.now() for row in rows)
    ids = session.scalars(select(OutboxEvent.id).where(OutboxEvent.seq > since)).all()
    assert len(set(ids)) == len(ids) == 2 + 3 + 4


def test_a_subscriber_without_a_bulk_form_gets_its_events_one_by_one(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    settings(session, pending_days=14)
    member_id = member()
    order(session, member_id, 5000)
    clock.advance(15 * DAY)
    seen: list[Event] = []
    with (
        extra_subscribers([(Event, lambda _s, told: seen.append(told))]),
        statements(session) as sent,
    ):
        assert service.settle_due_batch(session, batch_size=50) == 1
    assert not in_one_statement(sent)
    assert [type(e).__name__ for e in seen] == ["OrderActivated"]


def test_an_activation_settled_in_one_statement_qualifies_the_referral(
    session: Session, clock: FrozenClock
) -> None:
    terms(session, referrer_points=500, referee_points=200, min_order_total=5000)
    ann = make_member(session)
    bob = make_member(session, referrer=ann)
    place_order(session, bob.id, 6000)
    clock.advance(dt.timedelta(days=31))
    with statements(session) as sent:
        while service.settle_due_batch(session, batch_size=50):
            pass
    assert in_one_statement(sent)
    referral = referral_of(session, bob.id)
    assert (referral.status, referral.referrer_points) == ("qualified", 500)
