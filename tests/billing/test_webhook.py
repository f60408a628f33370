"""The Stripe webhook: signatures verified by the SDK, each event once, unknown types
acknowledged, payments become orders and refunds become refunds through the ledger, events out
of order, unknown customers kept for review."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loyalty.billing.models import StripeEvent, StripePayment
from loyalty.clock import FrozenClock
from loyalty.ledger import service as ledger
from tests.billing.conftest import (
    WEBHOOK_SECRET,
    event,
    new_id,
    payment_intent,
    refund,
    signature,
)
from tests.billing.fake_stripe import FakeStripe
from tests.test_problems import assert_problem

Send = Callable[..., Any]
Db = Callable[[], AbstractContextManager[Session]]
Headers = dict[str, str]


def events_recorded(db: Db) -> int:
    with db() as session:
        return int(session.scalar(select(func.count()).select_from(StripeEvent)) or 0)


def balance(db: Db, member_id: str) -> tuple[int, int]:
    with db() as session:
        report = ledger.get_balance(session, member_id)
        return report.available, report.pending


def order_of(db: Db, order_id: str) -> Any:
    with db() as session:
        return ledger.get_order(session, order_id=order_id)


def payment_of(db: Db, payment_id: str) -> StripePayment:
    with db() as session:
        payment = session.get(StripePayment, payment_id)
        assert payment is not None
        return payment


def link(client: FlaskClient, headers: Headers, member_id: str, customer: str) -> Any:
    return client.put(
        f"/v1/members/{member_id}/stripe-customer", json={"customer_id": customer}, headers=headers
    )


def test_without_stripe_configured_billing_answers_409(
    client: FlaskClient, headers: Headers, send: Send, member: Callable[..., str]
) -> None:
    member_id = member()
    assert_problem(send(event("ping", {"id": "x"})), 409, "stripe-not-configured")
    assert_problem(
        client.get(f"/v1/members/{member_id}/stripe-customer", headers=headers),
        409,
        "stripe-not-configured",
    )
    assert_problem(
        client.post(
            f"/v1/members/{member_id}/tier/checkout", json={"tier": "gold"}, headers=headers
        ),
        409,
        "stripe-not-configured",
    )
    assert_problem(
        client.get("/v1/billing/stripe/payments", headers=headers), 409, "stripe-not-configured"
    )


def test_bad_signatures_are_refused_and_nothing_is_recorded(
    stripe_on: FakeStripe, send: Send, db: Db, clock: FrozenClock
) -> None:
    body = json.dumps(event("payment_intent.succeeded", payment_intent(customer=None, amount=1)))
    now = int(time.time())
    for header in (
        signature(body, secret="whsec_other"),  # another endpoint's secret
        signature(body, at=now - 301),  # older than the 300 s tolerance
        signature(body + " "),  # another body
        "t=abc,v1=zz",  # malformed
        "",  # missing
        signature(body).replace("v1=", "v0="),  # not the v1 scheme
    ):
        problem = assert_problem(send(body, header=header), 400, "invalid-stripe-signature")
        assert WEBHOOK_SECRET not in json.dumps(problem)
    assert events_recorded(db) == 0
    # Within the tolerance it is accepted.
    assert send(body, header=signature(body, at=now - 200)).status_code == 200


def test_a_signed_body_that_is_not_an_event_is_400(stripe_on: FakeStripe, send: Send) -> None:
    assert_problem(send("not json"), 400, "invalid-stripe-event")
    assert_problem(send(json.dumps({"id": "evt_1", "type": "x"})), 400, "invalid-stripe-event")
    assert_problem(send(json.dumps([1, 2])), 400, "invalid-stripe-event")


def test_unknown_types_are_acknowledged_and_ignored(
    stripe_on: FakeStripe, send: Send, db: Db
) -> None:
    answer = send(event("customer.tax_id.created", {"id": "txi_1"}))
    assert answer.status_code == 200
    assert answer.json == {
        "received": True,
        "event_id": answer.json["event_id"],
        "type": "customer.tax_id.created",
        "status": "ignored",
        "replayed": False,
    }
    assert events_recorded(db) == 1


def test_a_payment_of_a_linked_member_accrues_once_however_often_it_comes(
    stripe_on: FakeStripe,
    send: Send,
    client: FlaskClient,
    headers: Headers,
    db: Db,
    member: Callable[..., str],
    clock: FrozenClock,
) -> None:
    member_id = member()
    customer = new_id("cus")
    assert link(client, headers, member_id, customer).status_code == 201
    pi = payment_intent(customer=customer, amount=12345, currency="usd")
    succeeded = event("payment_intent.succeeded", pi)
    first = send(succeeded)
    assert first.status_code == 200 and first.json["status"] == "processed"
    assert not first.json["replayed"]
    again = send(succeeded)
    assert again.status_code == 200 and again.json["replayed"]
    # The same payment told again by another event (its Checkout Session) earns nothing more.
    checkout = event(
        "checkout.session.completed",
        {
            "id": new_id("cs"),
            "object": "checkout.session",
            "mode": "payment",
            "payment_status": "paid",
            "payment_intent": pi["id"],
            "customer": customer,
            "amount_total": 12345,
            "currency": "usd",
        },
    )
    assert send(checkout).json["status"] == "processed"
    order = order_of(db, pi["id"])
    assert (order.total, order.currency, order.points, order.status) == (
        12345,
        "USD",
        123,
        "pending",
    )
    assert order.member_id == member_id
    assert balance(db, member_id) == (0, 123)
    # The order is the storefront channel's: its clients read it like any order.
    seen = client.get(f"/v1/orders/{pi['id']}", headers=headers)
    assert seen.status_code == 200 and seen.json["points"] == 123
    payments = client.get("/v1/billing/stripe/payments", headers=headers).json["items"]
    assert [(p["id"], p["status"], p["points"]) for p in payments] == [(pi["id"], "accrued", 123)]


def test_metadata_names_the_member_and_links_the_customer(
    stripe_on: FakeStripe,
    send: Send,
    client: FlaskClient,
    headers: Headers,
    db: Db,
    member: Callable[..., str],
    clock: FrozenClock,
) -> None:
    member_id = member()
    customer = new_id("cus")
    pi = payment_intent(customer=customer, amount=5000, member_id=member_id)
    assert send(event("payment_intent.succeeded", pi)).json["status"] == "processed"
    assert balance(db, member_id) == (0, 50)
    linked = client.get(f"/v1/members/{member_id}/stripe-customer", headers=headers)
    assert linked.status_code == 200
    assert (linked.json["customer_id"], linked.json["source"]) == (customer, "metadata")
    # Later payments of the customer need no metadata.
    later = payment_intent(customer=customer, amount=1000)
    assert send(event("payment_intent.succeeded", later)).json["status"] == "processed"
    assert balance(db, member_id) == (0, 60)


def test_a_payment_of_an_unknown_customer_is_kept_for_review_then_accrues_once_linked(
    stripe_on: FakeStripe,
    send: Send,
    client: FlaskClient,
    headers: Headers,
    db: Db,
    member: Callable[..., str],
    clock: FrozenClock,
) -> None:
    customer = new_id("cus")
    pi = payment_intent(customer=customer, amount=20000)
    answer = send(event("payment_intent.succeeded", pi))
    assert answer.status_code == 200 and answer.json["status"] == "review"
    # Its partial refund arrives too: it waits for the payment's order.
    partial = refund(pi_id=pi["id"], amount=5000)
    assert send(event("refund.created", partial)).json["status"] == "deferred"
    unmatched = client.get("/v1/billing/stripe/payments?status=unmatched", headers=headers).json
    assert [p["id"] for p in unmatched["items"]] == [pi["id"]]
    assert "No member is linked" in unmatched["items"][0]["detail"]
    waiting = client.get("/v1/billing/stripe/events?status=deferred", headers=headers).json
    assert [e["waiting_for"] for e in waiting["items"]] == [f"payment:{pi['id']}"]

    member_id = member()
    linked = link(client, headers, member_id, customer)
    assert linked.status_code == 201 and linked.json["payments_accrued"] == 1
    assert balance(db, member_id) == (0, 150)  # 200 earned, 50 refunded
    assert link(client, headers, member_id, customer).status_code == 200  # the same link again
    assert (
        client.get("/v1/billing/stripe/events?status=deferred", headers=headers).json["items"] == []
    )
    assert payment_of(db, pi["id"]).status == "accrued"


def test_refunds_reverse_in_proportion_and_a_refund_above_what_is_left_is_capped(
    stripe_on: FakeStripe,
    send: Send,
    client: FlaskClient,
    headers: Headers,
    db: Db,
    member: Callable[..., str],
    clock: FrozenClock,
) -> None:
    member_id = member()
    customer = new_id("cus")
    link(client, headers, member_id, customer)
    pi = payment_intent(customer=customer, amount=10000)
    send(event("payment_intent.succeeded", pi))
    first = refund(pi_id=pi["id"], amount=2500)
    assert send(event("refund.created", first)).json["status"] == "processed"
    assert balance(db, member_id) == (0, 75)
    # charge.refunded lists the same refund (applied once) and a new one.
    second = refund(pi_id=pi["id"], amount=5000)
    charge = {
        "id": first["charge"],
        "object": "charge",
        "payment_intent": pi["id"],
        "amount": 10000,
        "amount_refunded": 7500,
        "refunds": {"object": "list", "data": [first, second]},
    }
    assert send(event("charge.refunded", charge)).json["status"] == "processed"
    assert balance(db, member_id) == (0, 25)
    # The storefront refunded 2000 of it through the API meanwhile: Stripe's last 2500 is
    # more than the 500 left, so 500 is reversed and the refund is kept for review.
    by_api = client.post(
        f"/v1/orders/{pi['id']}/refunds",
        json={"refund_id": "r-api", "amount": 2000},
        headers=headers,
    )
    assert by_api.status_code == 201
    last = refund(pi_id=pi["id"], amount=2500)
    assert send(event("refund.created", last)).json["status"] == "review"
    assert balance(db, member_id) == (0, 0)
    order = order_of(db, pi["id"])
    assert order.amount_refunded == 10000
    flagged = client.get("/v1/billing/stripe/events?status=review", headers=headers).json["items"]
    assert "only 500" in flagged[0]["detail"]
    # Nothing at all is left: a further refund reverses nothing and is kept for review.
    assert send(event("refund.created", refund(pi_id=pi["id"], amount=1))).json["status"] == (
        "review"
    )


def test_a_refund_before_its_payment_waits_for_it(
    stripe_on: FakeStripe,
    send: Send,
    client: FlaskClient,
    headers: Headers,
    db: Db,
    member: Callable[..., str],
    clock: FrozenClock,
) -> None:
    member_id = member()
    customer = new_id("cus")
    link(client, headers, member_id, customer)
    pi = payment_intent(customer=customer, amount=8000)
    early = refund(pi_id=pi["id"], amount=8000)
    assert send(event("refund.created", early)).json["status"] == "deferred"
    assert send(event("payment_intent.succeeded", pi)).json["status"] == "processed"
    assert balance(db, member_id) == (0, 0)
    order = order_of(db, pi["id"])
    assert (order.points, order.points_reversed) == (80, 80)


def test_a_payment_the_programme_refuses_is_kept_for_review(
    stripe_on: FakeStripe,
    send: Send,
    client: FlaskClient,
    headers: Headers,
    db: Db,
    member: Callable[..., str],
    clock: FrozenClock,
) -> None:
    member_id = member()
    customer = new_id("cus")
    link(client, headers, member_id, customer)
    pi = payment_intent(customer=customer, amount=500, currency="xyz")  # not ISO 4217
    assert send(event("payment_intent.succeeded", pi)).json["status"] == "review"
    payment = payment_of(db, pi["id"])
    assert payment.status == "review"
    assert "validation-failed" in (payment.detail or "")
    assert balance(db, member_id) == (0, 0)


def test_subscription_payments_and_unpaid_sessions_earn_nothing(
    stripe_on: FakeStripe, send: Send, db: Db, member: Callable[..., str]
) -> None:
    member_id = member()
    invoice_pi = {
        **payment_intent(customer=None, amount=900, member_id=member_id),
        "invoice": "in_1",
    }
    assert send(event("payment_intent.succeeded", invoice_pi)).json["status"] == "ignored"
    unpaid = {
        "id": new_id("cs"),
        "mode": "payment",
        "payment_status": "unpaid",
        "amount_total": 100,
        "currency": "usd",
    }
    assert send(event("checkout.session.completed", unpaid)).json["status"] == "ignored"
    assert balance(db, member_id) == (0, 0)


def test_linking_conflicts_and_unlinking(
    stripe_on: FakeStripe, client: FlaskClient, headers: Headers, member: Callable[..., str]
) -> None:
    one, two = member(), member()
    customer = new_id("cus")
    assert link(client, headers, one, customer).status_code == 201
    assert_problem(link(client, headers, two, customer), 409, "stripe-customer-linked")
    assert_problem(link(client, headers, one, new_id("cus")), 409, "stripe-customer-linked")
    assert_problem(link(client, headers, "mem_nobody", new_id("cus")), 404, "member-not-found")
    bad = client.put(
        f"/v1/members/{one}/stripe-customer", json={"customer_id": "nope"}, headers=headers
    )
    assert_problem(bad, 422, "validation-failed")
    assert client.delete(f"/v1/members/{one}/stripe-customer", headers=headers).status_code == 204
    assert_problem(
        client.get(f"/v1/members/{one}/stripe-customer", headers=headers),
        404,
        "stripe-customer-not-found",
    )
    assert link(client, headers, two, customer).status_code == 201


def test_a_channel_that_does_not_exist_keeps_payments_for_review(
    app: Flask,
    stripe_on: FakeStripe,
    send: Send,
    db: Db,
    member: Callable[..., str],
    clock: FrozenClock,
) -> None:
    app.config["STRIPE_CHANNEL"] = "chn_missing"
    try:
        pi = payment_intent(customer=new_id("cus"), amount=100, member_id=member())
        assert send(event("payment_intent.succeeded", pi)).json["status"] == "review"
        assert "channel-not-found" in (payment_of(db, pi["id"]).detail or "")
    finally:
        app.config["STRIPE_CHANNEL"] = "chn_default"
