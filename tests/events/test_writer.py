"""The outbox writer: real calls of every area produce the outbound events the catalogue
documents, one row per event, in the transaction of the change, with the documented data."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import psycopg
import pytest
from flask import Flask
from sqlalchemy import make_url, select
from sqlalchemy.orm import Session

from loyalty import bus
from loyalty.clock import FrozenClock
from loyalty.community import service as community
from loyalty.events import outbox
from loyalty.events.catalogue import CATALOGUE
from loyalty.events.models import OutboxEvent
from loyalty.ledger import service as ledger
from loyalty.ledger.events import OrderRecorded
from loyalty.ledger.service import orders as ledger_orders
from loyalty.members import service as members
from loyalty.referrals import service as referrals
from loyalty.rewards import service as rewards
from loyalty.tiers import service as tiers
from tests.ledger.test_statements import counting

# Told by the worker (its lifecycle triggers and the analytics' daily pass), not by a call;
# tests/events/test_lifecycle.py and tests/analytics check those.
LIFECYCLE = {
    "lifecycle.first_order",
    "points.expiring_soon",
    "member.birthday",
    "member.inactive",
    "member.at_risk",
    "analytics.alert",
}
DAY = dt.timedelta(days=1)


def _outbox(session: Session) -> list[OutboxEvent]:
    return list(session.scalars(select(OutboxEvent).order_by(OutboxEvent.seq)))


def _types(session: Session) -> list[str]:
    return [event.type for event in _outbox(session)]


def _settle(session: Session, member_id: str) -> None:
    wallet = ledger.points_summaries(session, [member_id])[member_id]
    ledger.settle_wallet(session, wallet_id=wallet.id)


def test_every_call_tells_the_outside_world_what_it_did(
    session: Session, clock: FrozenClock
) -> None:
    tiers.create_tier(session, code="bronze", name="Bronze", rank=1, threshold=0, actor="t")
    tiers.create_tier(session, code="silver", name="Silver", rank=2, threshold=50, actor="t")
    community.create_badge(
        session,
        actor="t",
        name="Big spender",
        rule="spend",
        revoke_on_refund=False,
        levels=[{"name": "100", "threshold": 100, "bonus_points": 40}],
    )
    referrals.update_settings(
        session, changes={"referrer_points": 50, "referee_points": 20}, actor="t"
    )
    ann, _ = members.enroll_member(session, external_id="ann")
    bob, _ = members.enroll_member(session, external_id="bob", referral_code=ann.referral_code)
    members.update_member(session, member_id=ann.id, changes={"email": "ann@example.com"})
    ledger.accrue_order(session, member_id=bob.id, order_id="o-1", total=10000, currency="USD")
    clock.advance(15 * DAY)
    _settle(session, bob.id)  # activation, then the referral qualifies after the commit
    ledger.adjust(session, member_id=ann.id, points=30, reason="goodwill")
    held = ledger.place_hold(session, member_id=ann.id, points=10).hold
    ledger.capture_hold(session, hold_id=held.id)
    released = ledger.place_hold(session, member_id=ann.id, points=5).hold
    ledger.release_hold(session, hold_id=released.id)
    ledger.place_hold(session, member_id=ann.id, points=5, expires_in=60)
    clock.advance(2 * dt.timedelta(minutes=1))
    ledger.get_balance(session, ann.id)  # settles: the hold timed out
    reward = rewards.create_reward(
        session, actor="t", kind="custom", name="Tote bag", points_cost=10
    )
    used = rewards.claim_reward(session, member_id=ann.id, reward_id=reward.id).claim
    rewards.use_claim(session, claim_id=used.id)
    cancelled = rewards.claim_reward(session, member_id=ann.id, reward_id=reward.id).claim
    rewards.cancel_claim(session, claim_id=cancelled.id)
    ledger.refund_order(session, order_id="o-1", refund_id="r-1", amount=10000)
    tiers.assign_tier(session, member_id=bob.id, tier="bronze", reason="test", actor="t")
    clock.advance(4 * 365 * DAY)  # past the default 36-month validity
    ledger.get_balance(session, ann.id)

    written = set(_types(session))
    assert written == set(CATALOGUE) - LIFECYCLE, (
        f"missing {sorted(set(CATALOGUE) - LIFECYCLE - written)}"
    )
    for event in _outbox(session):
        schema = CATALOGUE[event.type][0]()
        assert schema.validate(event.data) == {}, (event.type, event.data)
        assert set(event.data) == set(schema.fields), event.type
        assert event.member_id in {ann.id, bob.id}, event.type


def test_an_accrual_writes_its_event_with_the_order_in_one_transaction(
    session: Session, clock: FrozenClock
) -> None:
    member, _ = members.enroll_member(session, external_id="one")
    before = len(_outbox(session))
    ledger.accrue_order(session, member_id=member.id, order_id="o-9", total=2500, currency="USD")
    events = _outbox(session)[before:]
    assert [(e.type, e.member_id) for e in events] == [("points.accrued", member.id)]
    assert events[0].data == {
        "source": "order",
        "order_id": "o-9",
        "channel_id": "chn_default",
        "reference": None,
        "points": 25,
        "status": "pending",
        "activates_at": (clock.now() + 14 * DAY).isoformat().replace("+00:00", "Z"),
        "balance": {"available": 0, "pending": 25, "held": 0},
    }
    # A replay of the same order is no new change: no new event.
    ledger.accrue_order(session, member_id=member.id, order_id="o-9", total=2500, currency="USD")
    assert len(_outbox(session)) == before + 1


@pytest.mark.parametrize("one_statement", [True, False], ids=["one statement", "orm"])
def test_an_orders_row_comes_before_those_of_what_it_caused(
    session: Session, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch, one_statement: bool
) -> None:
    """Whichever way the accrual writes its rows (the ORM's: SQLite, a wallet in debt)."""
    monkeypatch.setattr(ledger_orders, "_writes_at_once", lambda session: one_statement)
    tiers.create_tier(session, code="bronze", name="Bronze", rank=1, threshold=0, actor="t")
    tiers.create_tier(session, code="silver", name="Silver", rank=2, threshold=20, actor="t")
    member, _ = members.enroll_member(session, external_id="first")
    before = len(_outbox(session))
    ledger.accrue_order(session, member_id=member.id, order_id="o-f", total=2500, currency="USD")
    written = [(event.type, event.data.get("order_id")) for event in _outbox(session)[before:]]
    assert written == [("points.accrued", "o-f"), ("tier.upgraded", None)]


@pytest.mark.concurrency
def test_an_accruals_row_goes_in_with_the_accrual_and_wakes_the_workers(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    """On PostgreSQL the order's outbox row is written by the accrual's own statement, which
    queues the transaction's NOTIFY; the rows of what the order caused (a tier upgrade) follow
    it, without a NOTIFY of their own."""
    session = new_session()
    tiers.create_tier(session, code="bronze", name="Bronze", rank=1, threshold=0, actor="t")
    tiers.create_tier(session, code="silver", name="Silver", rank=2, threshold=20, actor="t")
    member, _ = members.enroll_member(session, external_id="notified")
    before = len(_outbox(session))
    session.commit()
    url = make_url(app.config["DATABASE_URL"]).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as listener:
        listener.execute(f"LISTEN {outbox.CHANNEL}")
        with counting(session.get_bind()) as seen:
            ledger.accrue_order(
                session, member_id=member.id, order_id="o-n", total=2500, currency="USD"
            )
        notes = list(listener.notifies(timeout=0.3, stop_after=2))
    assert [note.channel for note in notes] == [outbox.CHANNEL]
    assert [event.type for event in _outbox(session)[before:]] == [
        "points.accrued",
        "tier.upgraded",
    ]
    inserts = [statement for statement in seen if "outbox_events" in statement]
    assert "new_entry" in inserts[0] and "pg_notify" in inserts[0], inserts[0]
    assert [statement.split()[0] for statement in inserts[1:]] == ["INSERT"], inserts
    assert "pg_notify" not in inserts[1], inserts[1]


def test_a_change_rolled_back_leaves_no_event(session: Session, clock: FrozenClock) -> None:
    member, _ = members.enroll_member(session, external_id="rolled-back")
    before = len(_outbox(session))

    def fail(session: Session, event: OrderRecorded) -> None:
        raise RuntimeError("after the outbox row was written")

    with bus.extra_subscribers([(OrderRecorded, fail)]), pytest.raises(RuntimeError):
        ledger.accrue_order(
            session, member_id=member.id, order_id="o-x", total=2500, currency="USD"
        )
    assert len(_outbox(session)) == before
    assert ledger.get_balance(session, member.id).pending == 0


def test_an_activation_of_nothing_writes_nothing(session: Session, clock: FrozenClock) -> None:
    """An order that earns nothing, or whose points were all refunded, tells nothing when its
    return window ends."""
    member, _ = members.enroll_member(session, external_id="quiet")
    ledger.accrue_order(session, member_id=member.id, order_id="o-0", total=50, currency="USD")
    ledger.refund_order(session, order_id="o-0", refund_id="r-0", amount=50)
    clock.advance(15 * DAY)
    before = _types(session)
    _settle(session, member.id)
    assert _types(session) == before
