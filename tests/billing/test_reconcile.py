"""``loyalty stripe reconcile``: after a webhook outage, Stripe's event log (here
localstripe's) is read back and every event the webhook missed is applied, once."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import stripe
from flask import Flask
from sqlalchemy.orm import Session

from loyalty.billing.models import StripeEvent, StripePayment
from loyalty.cli import main
from loyalty.ledger import service as ledger
from tests.billing.conftest import SECRET_KEY, signature
from tests.billing.fake_stripe import FakeStripe

Send = Callable[..., Any]
Db = Callable[[], AbstractContextManager[Session]]


def pay(client: stripe.StripeClient, customer: str, amount: int) -> str:
    intent = client.v1.payment_intents.create(
        params={
            "amount": amount,
            "currency": "eur",
            "customer": customer,
            "payment_method": "pm_card_visa",
            "confirm": True,
        }
    )
    assert intent.status == "succeeded"
    return str(intent.id)


def test_reconcile_applies_what_the_webhook_missed_once(
    app: Flask, stripe_on: FakeStripe, send: Send, db: Db, member: Callable[..., str]
) -> None:
    since = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=1)
    member_id = member()
    stripe_api = stripe.StripeClient(SECRET_KEY, base_addresses={"api": stripe_on.url})
    known = stripe_api.v1.customers.create(params={"metadata": {"loyalty_member_id": member_id}})
    stranger = stripe_api.v1.customers.create(params={"email": "who@example.com"})
    first = pay(stripe_api, known.id, 2000)
    # The first payment's event reaches the webhook; then the webhook is down.
    listed = stripe_api.v1.events.list(params={"created": {"gte": int(since.timestamp())}})
    for delivered in sorted(
        (e.to_dict(for_json=True) for e in listed.auto_paging_iter()),
        key=lambda e: e["type"],  # customer.created first
    ):
        if delivered["data"]["object"].get("id") in (known.id, first):
            assert send(delivered).json["status"] == "processed"
    second = pay(stripe_api, known.id, 3000)
    unknown = pay(stripe_api, stranger.id, 1000)

    runner = app.test_cli_runner()
    result = runner.invoke(main, ["stripe", "reconcile", "--since", since.isoformat()])
    assert result.exit_code == 0, result.output
    assert f"{second}" not in result.output  # it prints event ids, not payments
    with db() as session:
        assert ledger.get_order(session, order_id=first).points == 20
        assert ledger.get_order(session, order_id=second).points == 30
        report = ledger.get_balance(session, member_id)
        assert (report.available, report.pending) == (0, 50)
        recorded = {
            row.type: row
            for row in session.query(StripeEvent).filter(StripeEvent.source == "reconcile")
        }
    assert "payment_intent.succeeded" in recorded
    lines = result.output.strip().splitlines()
    fixed = [line for line in lines if line.startswith("fixed ")]
    assert any("payment_intent.succeeded: processed" in line for line in fixed)
    assert any("payment_intent.succeeded: review" in line for line in fixed)  # the stranger's
    assert "already recorded" in lines[-1] and "applied now" in lines[-1]
    # The unknown customer's payment waits for review.
    with db() as session:
        assert session.get(StripePayment, unknown).status == "unmatched"  # type: ignore[union-attr]

    # Safe to run again: nothing more is applied.
    again = runner.invoke(main, ["stripe", "reconcile", "--since", since.isoformat()])
    assert again.exit_code == 0, again.output
    assert "0 applied now" in again.output
    assert not [line for line in again.output.splitlines() if line.startswith("fixed ")]


def test_reconcile_without_stripe_or_with_stripe_down_fails_cleanly(
    app: Flask, stripe_on: FakeStripe
) -> None:
    runner = app.test_cli_runner()
    stripe_on.fail("/v1/events", 3)
    down = runner.invoke(main, ["stripe", "reconcile", "--since", "2026-12-01"])
    assert down.exit_code == 1 and "Stripe" in down.output
    assert SECRET_KEY not in down.output
    bad = runner.invoke(main, ["stripe", "reconcile", "--since", "yesterday"])
    assert bad.exit_code == 2
    app.config["STRIPE_SECRET_KEY"] = None
    off = runner.invoke(main, ["stripe", "reconcile", "--since", "2026-12-01"])
    assert off.exit_code == 1 and "LOYALTY_STRIPE_SECRET_KEY" in off.output


def test_signature_helper_matches_the_sdk() -> None:
    """The tests' signatures are Stripe's documented scheme: the SDK's own helper agrees."""
    payload = json.dumps({"id": "evt_1"})
    now = int(time.time())
    assert signature(payload, at=now) == stripe.WebhookSignature.generate_signature_header(
        payload, "whsec_test_" + "s3cr3t" * 6, timestamp=now
    )
