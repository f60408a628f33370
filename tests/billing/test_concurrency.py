"""Stripe events on real PostgreSQL connections and threads: the same event delivered several
times at once (Stripe retries while the first is still running) is applied once, and so is
one payment told by two different events at once."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loyalty.billing import service as billing
from loyalty.billing.models import StripeEvent, StripePayment, StripeRefund, StripeSubscription
from loyalty.clock import FrozenClock
from loyalty.ledger import service as ledger
from loyalty.members import service as members
from loyalty.tiers import service as tiers
from tests.billing.conftest import event, new_id, payment_intent, refund
from tests.billing.fake_stripe import FakeStripe
from tests.support import race

pytestmark = pytest.mark.concurrency


def linked_member(session: Session) -> tuple[str, str]:
    member, _ = members.enroll_member(session, external_id=new_id("racer"))
    customer = new_id("cus")
    billing.link_customer(session, member_id=member.id, customer_id=customer)
    return member.id, customer


def test_the_same_event_at_once_is_applied_once(
    app: Flask, stripe_on: FakeStripe, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    member_id, customer = linked_member(new_session())
    succeeded = event("payment_intent.succeeded", payment_intent(customer=customer, amount=9900))
    results = race(app, 4, lambda i, s: billing.receive_event(s, event=succeeded, source="webhook"))
    assert sorted(r.replayed for r in results) == [False, True, True, True], results  # type: ignore[union-attr]
    check = new_session()
    assert check.scalar(select(func.count()).select_from(StripeEvent)) == 1
    assert ledger.get_balance(check, member_id).pending == 99


def test_one_payment_told_by_two_events_at_once_is_one_order(
    app: Flask, stripe_on: FakeStripe, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    member_id, customer = linked_member(new_session())
    pi = payment_intent(customer=customer, amount=5000)
    checkout = {
        "id": new_id("cs"),
        "mode": "payment",
        "payment_status": "paid",
        "payment_intent": pi["id"],
        "customer": customer,
        "amount_total": 5000,
        "currency": "usd",
    }
    told = [event("payment_intent.succeeded", pi), event("checkout.session.completed", checkout)]
    results = race(app, 2, lambda i, s: billing.receive_event(s, event=told[i], source="webhook"))
    assert [r.status for r in results] == ["processed", "processed"], results  # type: ignore[union-attr]
    check = new_session()
    assert check.scalar(select(func.count()).select_from(StripePayment)) == 1
    assert ledger.get_balance(check, member_id).pending == 50


def test_one_refund_told_by_two_events_at_once_reverses_once(
    app: Flask, stripe_on: FakeStripe, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    member_id, customer = linked_member(new_session())
    pi = payment_intent(customer=customer, amount=10000)
    billing.receive_event(
        new_session(), event=event("payment_intent.succeeded", pi), source="webhook"
    )
    one = refund(pi_id=pi["id"], amount=4000)
    charge = {"id": one["charge"], "payment_intent": pi["id"], "refunds": {"data": [one]}}
    told = [event("refund.created", one), event("charge.refunded", charge)]
    results = race(app, 2, lambda i, s: billing.receive_event(s, event=told[i], source="webhook"))
    assert [r.status for r in results] == ["processed", "processed"], results  # type: ignore[union-attr]
    check = new_session()
    assert check.scalar(select(func.count()).select_from(StripeRefund)) == 1
    assert ledger.get_balance(check, member_id).pending == 60


def test_a_subscription_told_by_two_events_at_once_is_recorded_once(
    app: Flask, stripe_on: FakeStripe, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    session = new_session()
    tiers.create_tier(
        session,
        code="gold",
        name="Gold",
        rank=1,
        threshold=10**9,
        stripe_price_id="price_g",
        actor="test",
    )
    member_id, customer = linked_member(session)
    sub = new_id("sub")
    meta = {"loyalty_member_id": member_id, "loyalty_tier": "gold"}
    checkout = {
        "id": new_id("cs"),
        "mode": "subscription",
        "payment_status": "paid",
        "subscription": sub,
        "customer": customer,
        "metadata": meta,
    }
    created = {
        "id": sub,
        "status": "active",
        "customer": customer,
        "items": {"data": [{"price": {"id": "price_g"}}]},
        "metadata": meta,
    }
    told = [
        event("checkout.session.completed", checkout),
        event("customer.subscription.created", created),
    ]
    results = race(app, 2, lambda i, s: billing.receive_event(s, event=told[i], source="webhook"))
    assert [r.status for r in results] == ["processed", "processed"], results  # type: ignore[union-attr]
    check = new_session()
    assert check.scalar(select(func.count()).select_from(StripeSubscription)) == 1
    assert tiers.current_tiers(check, [member_id])[member_id].code == "gold"
