"""Paid tiers end to end with a controlled clock: checkout, paid, a failed payment and its
grace, recovery, cancellation at period end, events out of order; the paid and the earned
tier combine (the higher wins) and every change is in the tier history."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty.billing.models import StripeCustomer
from loyalty.clock import FrozenClock
from loyalty.events.models import OutboxEvent
from loyalty.ledger import service as ledger
from loyalty.tiers import service as tiers
from tests.billing.conftest import event, new_id
from tests.billing.fake_stripe import FakeStripe
from tests.support import START
from tests.test_problems import assert_problem

Send = Callable[..., Any]
Headers = dict[str, str]
Db = Callable[[], AbstractContextManager[Session]]
DAY = dt.timedelta(days=1)
PRICE = "price_gold_monthly"


def at(moment: dt.datetime) -> int:
    return int(moment.timestamp())


@pytest.fixture
def ladder(db: Db) -> None:
    with db() as session:
        for code, rank, threshold, price in (
            ("bronze", 1, 0, None),
            ("silver", 2, 500, None),
            ("gold", 3, 100000, PRICE),
        ):
            tiers.create_tier(
                session,
                code=code,
                name=code.title(),
                rank=rank,
                threshold=threshold,
                stripe_price_id=price,
                actor="test",
            )


def tier_of(client: FlaskClient, headers: Headers, member_id: str) -> tuple[str, str]:
    body = client.get(f"/v1/members/{member_id}/tier", headers=headers).json
    return body["tier"]["code"], body["source"]


def history(client: FlaskClient, headers: Headers, member_id: str) -> list[tuple[str, str]]:
    items = client.get(f"/v1/members/{member_id}/tier/history", headers=headers).json["items"]
    return [(item["kind"], item["to"]) for item in reversed(items)]


def subscription(sub_id: str, *, status: str, period_end: dt.datetime, **extra: Any) -> dict:
    return {
        "id": sub_id,
        "object": "subscription",
        "status": status,
        "customer": extra.pop("customer", None),
        "cancel_at_period_end": extra.pop("cancel_at_period_end", False),
        "items": {
            "data": [{"price": {"id": PRICE}, "current_period_end": at(period_end)}],
        },
        "metadata": extra.pop("metadata", {}),
        **extra,
    }


def invoice(sub_id: str, *, customer: str, period_end: dt.datetime) -> dict:
    return {
        "id": new_id("in"),
        "object": "invoice",
        "customer": customer,
        "parent": {"subscription_details": {"subscription": sub_id}},
        "lines": {"data": [{"period": {"end": at(period_end)}, "pricing": {}}]},
    }


def test_checkout_sells_a_paid_tier(
    stripe_on: FakeStripe,
    client: FlaskClient,
    headers: Headers,
    member: Callable[..., str],
    ladder: None,
    db: Db,
) -> None:
    member_id = member(email="ann@example.com", name="Ann")
    answer = client.post(
        f"/v1/members/{member_id}/tier/checkout", json={"tier": "gold"}, headers=headers
    )
    assert answer.status_code == 201, answer.json
    body = answer.json
    assert body["url"].startswith("https://checkout.stripe.test/")
    made = stripe_on.sessions[body["id"]]
    assert made["mode"] == "subscription"
    assert made["line_items"] == {"0": {"price": PRICE, "quantity": "1"}}
    assert made["metadata"] == {"loyalty_member_id": member_id, "loyalty_tier": "gold"}
    assert made["subscription_data"]["metadata"] == made["metadata"]
    assert made["success_url"] == "https://shop.example/thanks"
    # The customer was created at the fake Stripe (localstripe) and linked.
    assert made["customer"] == body["customer_id"] and body["customer_id"].startswith("cus_")
    with db() as session:
        link = session.get(StripeCustomer, body["customer_id"])
        assert link is not None and (link.member_id, link.source) == (member_id, "checkout")
    # A second checkout reuses the customer.
    again = client.post(
        f"/v1/members/{member_id}/tier/checkout",
        json={"tier": "gold", "success_url": "https://shop.example/ok"},
        headers=headers,
    )
    assert again.json["customer_id"] == body["customer_id"]
    assert stripe_on.sessions[again.json["id"]]["success_url"] == "https://shop.example/ok"
    creations = [c for c in stripe_on.calls if c == ("POST", "/v1/customers")]
    assert len(creations) == 1

    assert_problem(
        client.post(
            f"/v1/members/{member_id}/tier/checkout", json={"tier": "silver"}, headers=headers
        ),
        422,
        "tier-not-paid",
    )
    assert_problem(
        client.post(
            f"/v1/members/{member_id}/tier/checkout", json={"tier": "none"}, headers=headers
        ),
        404,
        "tier-not-found",
    )
    assert_problem(
        client.post("/v1/members/mem_x/tier/checkout", json={"tier": "gold"}, headers=headers),
        404,
        "member-not-found",
    )


def test_stripe_down_at_checkout_is_503_and_changes_nothing(
    stripe_on: FakeStripe,
    client: FlaskClient,
    headers: Headers,
    member: Callable[..., str],
    ladder: None,
) -> None:
    member_id = member()
    stripe_on.fail("/v1/", 10)
    answer = client.post(
        f"/v1/members/{member_id}/tier/checkout", json={"tier": "gold"}, headers=headers
    )
    problem = assert_problem(answer, 503, "stripe-unavailable")
    assert "sk_test" not in str(problem)
    assert_problem(
        client.get(f"/v1/members/{member_id}/stripe-customer", headers=headers),
        404,
        "stripe-customer-not-found",
    )


def test_the_subscription_lifecycle(
    stripe_on: FakeStripe,
    send: Send,
    client: FlaskClient,
    headers: Headers,
    member: Callable[..., str],
    ladder: None,
    db: Db,
    clock: FrozenClock,
) -> None:
    member_id = member()
    customer, sub = new_id("cus"), new_id("sub")
    with db() as session:  # 600 points earned: silver
        ledger.accrue_order(
            session, order_id="o-1", member_id=member_id, total=60000, currency="USD"
        )
    assert tier_of(client, headers, member_id) == ("silver", "computed")
    t0 = START
    period_1 = t0 + 30 * DAY

    # Out of order: the subscription's creation, without metadata, before its checkout.
    created = event(
        "customer.subscription.created",
        subscription(sub, status="active", period_end=period_1, customer=customer),
        created=at(t0),
    )
    assert send(created).json["status"] == "deferred"
    checkout = {
        "id": new_id("cs"),
        "object": "checkout.session",
        "mode": "subscription",
        "payment_status": "paid",
        "subscription": sub,
        "customer": customer,
        "client_reference_id": member_id,
        "metadata": {"loyalty_member_id": member_id, "loyalty_tier": "gold"},
    }
    assert (
        send(event("checkout.session.completed", checkout, created=at(t0))).json["status"]
        == "processed"
    )
    assert tier_of(client, headers, member_id) == ("gold", "paid")
    got = client.get(f"/v1/members/{member_id}/tier", headers=headers).json
    assert got["until"] == (period_1 + 7 * DAY).isoformat().replace("+00:00", "Z")
    deferred = client.get("/v1/billing/stripe/events?status=deferred", headers=headers).json
    assert deferred["items"] == []
    paid = event(
        "invoice.paid", invoice(sub, customer=customer, period_end=period_1), created=at(t0)
    )
    assert send(paid).json["status"] == "processed"

    # The renewal's payment fails: the tier is kept through the grace (7 days).
    clock.set(period_1)
    failed = event(
        "invoice.payment_failed",
        invoice(sub, customer=customer, period_end=period_1 + 30 * DAY),
        created=at(period_1),
    )
    assert send(failed).json["status"] == "processed"
    clock.set(period_1 + 6 * DAY)
    assert tier_of(client, headers, member_id) == ("gold", "paid")
    # Stripe's retry succeeds: paid again, to the new period's end.
    period_2 = period_1 + 30 * DAY
    recovered = event(
        "invoice.paid",
        invoice(sub, customer=customer, period_end=period_2),
        created=at(clock.now()),
    )
    assert send(recovered).json["status"] == "processed"
    clock.set(period_1 + 8 * DAY)  # past the first grace: still paid
    assert tier_of(client, headers, member_id) == ("gold", "paid")

    # A late, older event (past_due from before the recovery) changes nothing.
    stale = event(
        "customer.subscription.updated",
        subscription(sub, status="past_due", period_end=period_2, customer=customer),
        created=at(period_1 + DAY),
    )
    assert send(stale).json["status"] == "processed"
    assert tier_of(client, headers, member_id) == ("gold", "paid")

    # Cancelled at period end: kept to the end of the paid period, no grace.
    cancel = event(
        "customer.subscription.updated",
        subscription(
            sub, status="active", period_end=period_2, customer=customer, cancel_at_period_end=True
        ),
        created=at(clock.now()),
    )
    assert send(cancel).json["status"] == "processed"
    clock.set(period_2 - DAY)
    assert tier_of(client, headers, member_id) == ("gold", "paid")
    clock.set(period_2 + dt.timedelta(seconds=1))
    assert tier_of(client, headers, member_id) == ("silver", "computed")  # reads at once
    with db() as session:
        assert tiers.run_due(session)["paid tiers ended"] == 1
        assert tiers.run_due(session)["paid tiers ended"] == 0
    deleted = event(
        "customer.subscription.deleted",
        subscription(sub, status="canceled", period_end=period_2, customer=customer),
        created=at(clock.now()),
    )
    assert send(deleted).json["status"] == "processed"
    assert tier_of(client, headers, member_id) == ("silver", "computed")
    assert history(client, headers, member_id) == [
        ("upgrade", "silver"),
        ("paid", "gold"),
        ("paid_ended", "silver"),
    ]
    # The usual domain events: the storefront's webhooks hear of each change.
    with db() as session:
        told = [
            (row.type, row.data["kind"], row.data["to_tier"])
            for row in session.scalars(
                select(OutboxEvent)
                .where(OutboxEvent.member_id == member_id, OutboxEvent.type.like("tier.%"))
                .order_by(OutboxEvent.seq)
            )
        ]
    assert told == [
        ("tier.upgraded", "upgrade", "silver"),
        ("tier.upgraded", "paid", "gold"),
        ("tier.downgraded", "paid_ended", "silver"),
    ]


def test_an_immediate_cancellation_ends_the_tier_at_once(
    stripe_on: FakeStripe,
    send: Send,
    client: FlaskClient,
    headers: Headers,
    member: Callable[..., str],
    ladder: None,
    clock: FrozenClock,
) -> None:
    member_id = member()
    customer, sub = new_id("cus"), new_id("sub")
    meta = {"loyalty_member_id": member_id, "loyalty_tier": "gold"}
    made = event(
        "customer.subscription.created",
        subscription(
            sub, status="active", period_end=START + 30 * DAY, customer=customer, metadata=meta
        ),
        created=at(START),
    )
    assert send(made).json["status"] == "processed"
    assert tier_of(client, headers, member_id) == ("gold", "paid")
    clock.set(START + 3 * DAY)
    gone = event(
        "customer.subscription.deleted",
        subscription(
            sub,
            status="canceled",
            period_end=START + 30 * DAY,
            customer=customer,
            metadata=meta,
            ended_at=at(START + 3 * DAY),
        ),
        created=at(START + 3 * DAY),
    )
    assert send(gone).json["status"] == "processed"
    assert tier_of(client, headers, member_id) == ("bronze", "computed")
    assert history(client, headers, member_id)[-1] == ("paid_ended", "bronze")


def test_an_unpaid_first_invoice_grants_nothing(
    stripe_on: FakeStripe,
    send: Send,
    client: FlaskClient,
    headers: Headers,
    member: Callable[..., str],
    ladder: None,
    clock: FrozenClock,
) -> None:
    member_id = member()
    sub = new_id("sub")
    meta = {"loyalty_member_id": member_id, "loyalty_tier": "gold"}
    made = event(
        "customer.subscription.created",
        subscription(sub, status="incomplete", period_end=START + 30 * DAY, metadata=meta),
        created=at(START),
    )
    assert send(made).json["status"] == "processed"
    assert tier_of(client, headers, member_id) == ("bronze", "computed")
