"""Billing's pure rules: reading Stripe objects of old and new API versions, what a
subscription grants, and the backoff."""

from __future__ import annotations

import datetime as dt

from loyalty.billing import rules

T = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
GRACE = 7 * DAY


def until(status: str, **kwargs: object) -> dt.datetime | None:
    values: dict = {
        "current_period_end": T + 30 * DAY,
        "cancel_at_period_end": False,
        "payment_failed_at": None,
        "ended_at": None,
        "grace": GRACE,
        "now": T,
        **kwargs,
    }
    return rules.granted_until(status=status, **values)


def test_what_a_subscription_grants() -> None:
    assert until("active") == T + 37 * DAY
    assert until("trialing", current_period_end=None) == T + GRACE
    assert until("active", cancel_at_period_end=True) == T + 30 * DAY
    assert until("past_due", payment_failed_at=T - 2 * DAY) == T + 5 * DAY
    assert until("unpaid") == T + GRACE
    assert until("incomplete") is None
    assert until("canceled") is None
    assert until("canceled", ended_at=T + 3 * DAY) == T + 3 * DAY
    assert until("paused") is None


def test_payments_of_both_events() -> None:
    pi = {
        "id": "pi_1",
        "amount": 500,
        "amount_received": 450,
        "currency": "eur",
        "customer": "cus_1",
    }
    payment = rules.payment_of("payment_intent.succeeded", pi)
    assert payment is not None and (payment.id, payment.amount, payment.customer_id) == (
        "pi_1",
        450,
        "cus_1",
    )
    localstripe_pi = {"id": "pi_2", "amount": 500, "currency": "eur", "customer": {"id": "cus_2"}}
    assert rules.payment_of("payment_intent.succeeded", localstripe_pi).amount == 500  # type: ignore[union-attr]
    assert rules.payment_of("payment_intent.succeeded", {**pi, "invoice": "in_1"}) is None
    session = {
        "id": "cs_1",
        "mode": "payment",
        "payment_status": "paid",
        "amount_total": 900,
        "currency": "usd",
        "client_reference_id": "mem_1",
        "discounts": [{"promotion_code": "promo_1"}, {"coupon": "c"}],
    }
    paid = rules.payment_of("checkout.session.completed", session)
    assert paid is not None
    assert (paid.id, paid.member_id, paid.promotion_codes) == ("cs_1", "mem_1", ("promo_1",))
    assert rules.payment_of("checkout.session.completed", {**session, "mode": "setup"}) is None


def test_refunds_of_both_events() -> None:
    refund = {"id": "re_1", "amount": 100, "payment_intent": "pi_1", "status": "succeeded"}
    assert [r.id for r in rules.refunds_of("refund.created", refund)] == ["re_1"]
    assert rules.refunds_of("refund.created", {**refund, "status": "failed"}) == []
    charge = {
        "id": "ch_1",
        "payment_intent": "pi_1",
        "refunds": {"data": [{"id": "re_2", "amount": 5}, {"id": "re_3", "amount": 6}]},
    }
    got = rules.refunds_of("charge.refunded", charge)
    assert [(r.id, r.payment_id, r.charge_id, r.amount) for r in got] == [
        ("re_2", "pi_1", "ch_1", 5),
        ("re_3", "pi_1", "ch_1", 6),
    ]
    assert rules.refunds_of("charge.refunded", {"id": "ch_1", "payment_intent": "pi_1"}) == []


def test_subscriptions_of_old_and_new_api_versions() -> None:
    old = {
        "id": "sub_1",
        "status": "active",
        "current_period_end": int((T + 30 * DAY).timestamp()),
        "items": {"data": [{"plan": {"id": "price_1"}}]},
        "metadata": {"loyalty_member_id": "mem_1", "loyalty_tier": "gold"},
    }
    state = rules.subscription_of("customer.subscription.updated", old)
    assert state is not None
    assert (state.price_id, state.current_period_end, state.tier_code) == (
        "price_1",
        T + 30 * DAY,
        "gold",
    )
    new = {
        "id": "sub_1",
        "status": "active",
        "items": {"data": [{"price": "price_2", "current_period_end": int((T + DAY).timestamp())}]},
    }
    assert rules.subscription_of("customer.subscription.created", new).current_period_end == (  # type: ignore[union-attr]
        T + DAY
    )
    assert rules.subscription_of("customer.subscription.deleted", new).status == "canceled"  # type: ignore[union-attr]
    old_invoice = {"subscription": "sub_1", "lines": {"data": [{"period": {"end": 0}}]}}
    assert rules.subscription_of("invoice.paid", old_invoice).paid is True  # type: ignore[union-attr]
    assert rules.subscription_of("invoice.paid", {"lines": {"data": []}}) is None


def test_backoff() -> None:
    assert [rules.retry_delay(n).total_seconds() // 60 for n in (1, 2, 3, 7, 8, 20)] == [
        1,
        2,
        4,
        60,
        60,
        60,
    ]
