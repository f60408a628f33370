"""Billing end to end on SQLite, the embedded database: a payment and its refund out of
order, a duplicate, a paid tier from subscription to its end by the job, and a promotion code
made by the job."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from flask import Flask

from loyalty import wiring
from loyalty.clock import FrozenClock, use_clock
from loyalty.db import get_database
from tests.billing.conftest import (
    SECRET_KEY,
    WEBHOOK_SECRET,
    event,
    new_id,
    payment_intent,
    refund,
    signature,
)
from tests.billing.fake_stripe import FakeStripe
from tests.conftest import bearer_headers
from tests.support import START

DAY = dt.timedelta(days=1)


def test_billing_on_sqlite(sqlite_app: Flask, fake_stripe: FakeStripe) -> None:
    app = sqlite_app
    app.config.update(
        STRIPE_SECRET_KEY=SECRET_KEY,
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        STRIPE_API_BASE=fake_stripe.url,
    )
    clock = FrozenClock(START)
    use_clock(app, clock)
    client = app.test_client()
    headers = bearer_headers(
        app, ["members:write", "members:read", "program:read", "program:write", "points:redeem"]
    )

    def send(body: dict[str, Any]) -> dict[str, Any]:
        payload = json.dumps(body)
        answer = client.post(
            "/v1/billing/stripe/webhook",
            data=payload,
            headers={"Content-Type": "application/json", "Stripe-Signature": signature(payload)},
        )
        assert answer.status_code == 200, answer.json
        result: dict[str, Any] = answer.json
        return result

    def balance() -> tuple[int, int]:
        got = client.get(f"/v1/members/{member_id}/balance", headers=headers).json
        return got["available"], got["pending"]

    member_id = client.post("/v1/members", json={"external_id": "lite"}, headers=headers).json["id"]
    customer = new_id("cus")
    linked = client.put(
        f"/v1/members/{member_id}/stripe-customer", json={"customer_id": customer}, headers=headers
    )
    assert linked.status_code == 201

    pi = payment_intent(customer=customer, amount=3000)
    assert send(event("refund.created", refund(pi_id=pi["id"], amount=1000)))["status"] == (
        "deferred"
    )
    paid = event("payment_intent.succeeded", pi)
    assert send(paid)["status"] == "processed"
    assert send(paid)["replayed"] is True
    assert balance() == (0, 20)

    gold = {"code": "gold", "name": "Gold", "rank": 1, "threshold": 10**6, "stripe_price_id": "p_g"}
    assert client.post("/v1/program/tiers", json=gold, headers=headers).status_code == 201
    sub = {
        "id": new_id("sub"),
        "status": "active",
        "customer": customer,
        "cancel_at_period_end": True,
        "items": {
            "data": [{"price": "p_g", "current_period_end": int((START + 30 * DAY).timestamp())}]
        },
    }
    assert send(event("customer.subscription.created", sub))["status"] == "processed"
    tier = client.get(f"/v1/members/{member_id}/tier", headers=headers).json
    assert (tier["tier"]["code"], tier["source"]) == ("gold", "paid")
    clock.set(START + 31 * DAY)
    with app.app_context():
        session = get_database(app).sessionmaker()
        try:
            counts = wiring.run_area_due_work(session, batch_size=10)
        finally:
            session.close()
    assert counts["paid tiers ended"] == 1
    assert client.get(f"/v1/members/{member_id}/tier", headers=headers).json["tier"] is None

    reward = client.post(
        "/v1/program/rewards",
        json={
            "kind": "fixed_discount",
            "name": "5 off",
            "points_cost": 1,
            "amount": 500,
            "currency": "USD",
        },
        headers=headers,
    ).json
    clock.set(START + 40 * DAY)  # the order's points are active
    claim = client.post(
        f"/v1/members/{member_id}/rewards/{reward['id']}/claims", json={}, headers=headers
    )
    assert claim.status_code == 201, claim.json
    with app.app_context():
        session = get_database(app).sessionmaker()
        try:
            counts = wiring.run_area_due_work(session, batch_size=10)
        finally:
            session.close()
    assert counts["promotion codes created"] == 1
    codes = [
        c for c in fake_stripe.promotion_codes.values() if c["code"] == claim.json["coupon_code"]
    ]
    assert len(codes) == 1 and codes[0]["customer"] == customer
