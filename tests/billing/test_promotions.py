"""Rewards as Stripe promotion codes: a discount claim queues one, the job creates it at the
fake Stripe (restricted to the member's customer, one redemption, the claim's code), retries
an outage with backoff, deactivates it when the claim is cancelled, and a checkout that used
it marks the claim used."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
import requests
from sqlalchemy.orm import Session

from loyalty import wiring
from loyalty.billing import service as billing
from loyalty.billing.models import StripePromotionCode
from loyalty.clock import FrozenClock
from loyalty.ledger import service as ledger
from loyalty.rewards import service as rewards
from tests.billing.conftest import event, new_id, payment_intent
from tests.billing.fake_stripe import FakeStripe

Send = Callable[..., Any]
Db = Callable[[], AbstractContextManager[Session]]
NOTHING = {
    "promotion codes created": 0,
    "promotion codes deactivated": 0,
    "promotion code calls failed": 0,
}


@pytest.fixture
def shopper(db: Db, member: Callable[..., str]) -> tuple[str, str]:
    """A member with 1000 points and a linked Stripe customer."""
    member_id = member()
    customer = new_id("cus")
    with db() as session:
        ledger.adjust(session, member_id=member_id, points=1000, reason="welcome", actor="test")
    with db() as session:
        billing.link_customer(session, member_id=member_id, customer_id=customer)
    return member_id, customer


def reward(db: Db, **values: Any) -> str:
    with db() as session:
        made = rewards.create_reward(
            session, actor="test", name="Reward", points_cost=100, **values
        )
        return made.id


def claim(db: Db, member_id: str, reward_id: str) -> tuple[str, str]:
    with db() as session:
        result = rewards.claim_reward(session, member_id=member_id, reward_id=reward_id)
        return result.claim.id, result.claim.coupon_code


def row(db: Db, claim_id: str) -> StripePromotionCode | None:
    with db() as session:
        return session.get(StripePromotionCode, claim_id)


def run(db: Db) -> dict[str, int]:
    with db() as session:
        return billing.run_due(session)


def coupon(fake: FakeStripe, coupon_id: str) -> dict[str, Any]:
    answer = requests.get(
        f"{fake.localstripe.url}/v1/coupons/{coupon_id}", auth=("sk_test_x", ""), timeout=10
    )
    assert answer.status_code == 200
    result: dict[str, Any] = answer.json()
    return result


def test_a_discount_claim_becomes_a_promotion_code_and_cancelling_deactivates_it(
    stripe_on: FakeStripe, db: Db, shopper: tuple[str, str], clock: FrozenClock
) -> None:
    member_id, customer = shopper
    fixed = reward(db, kind="fixed_discount", amount=500, currency="USD")
    claim_id, code = claim(db, member_id, fixed)
    queued = row(db, claim_id)
    assert queued is not None and queued.status == "creating"
    assert not [c for c in stripe_on.calls if "promotion" in c[1]]  # nothing called yet

    assert run(db) == {**NOTHING, "promotion codes created": 1}
    made = row(db, claim_id)
    assert made is not None and made.status == "active"
    promo = stripe_on.promotion_codes[made.promotion_code_id or ""]
    assert promo["code"] == code and promo["active"] is True
    assert promo["customer"] == customer and promo["max_redemptions"] == 1
    assert promo["metadata"]["loyalty_claim_id"] == claim_id
    with db() as session:
        expires = rewards.get_claim(session, claim_id).expires_at
    assert promo["expires_at"] == int(expires.timestamp())
    stripe_coupon = coupon(stripe_on, made.coupon_id or "")
    assert (stripe_coupon["amount_off"], stripe_coupon["currency"]) == (500, "usd")
    assert stripe_coupon["duration"] == "once"
    assert run(db) == NOTHING  # done once

    with db() as session:
        rewards.cancel_claim(session, claim_id=claim_id)
    assert row(db, claim_id).status == "deactivating"  # type: ignore[union-attr]
    assert run(db) == {**NOTHING, "promotion codes deactivated": 1}
    assert promo["active"] is False
    assert row(db, claim_id).status == "inactive"  # type: ignore[union-attr]
    assert run(db) == NOTHING


def test_an_outage_is_retried_with_backoff(
    stripe_on: FakeStripe, db: Db, shopper: tuple[str, str], clock: FrozenClock
) -> None:
    member_id, _ = shopper
    percent = reward(db, kind="percentage_discount", percent=15)
    claim_id, code = claim(db, member_id, percent)
    # The SDK tries each call 3 times (2 retries); the job then backs off 1, 2, 4... minutes.
    stripe_on.fail("/v1/promotion_codes", 6)  # the coupon is made; the code fails twice
    assert run(db) == {**NOTHING, "promotion code calls failed": 1}
    failed = row(db, claim_id)
    assert failed is not None and (failed.status, failed.attempts) == ("creating", 1)
    assert failed.last_error == "stripe-unavailable"
    assert run(db) == NOTHING  # not due before its backoff
    clock.advance(dt.timedelta(minutes=1))
    assert run(db) == {**NOTHING, "promotion code calls failed": 1}
    clock.advance(dt.timedelta(minutes=1))
    assert run(db) == NOTHING  # the second wait is 2 minutes
    clock.advance(dt.timedelta(minutes=1))
    assert run(db)["promotion codes created"] == 1  # the coupon made before is reused
    made = row(db, claim_id)
    assert made is not None and made.status == "active" and made.last_error is None
    assert coupon(stripe_on, made.coupon_id or "")["percent_off"] == 15.0
    assert stripe_on.promotion_codes[made.promotion_code_id or ""]["code"] == code


def test_a_checkout_that_used_the_code_marks_the_claim_used(
    stripe_on: FakeStripe, db: Db, send: Send, shopper: tuple[str, str], clock: FrozenClock
) -> None:
    member_id, customer = shopper
    fixed = reward(db, kind="fixed_discount", amount=300, currency="USD")
    claim_id, _ = claim(db, member_id, fixed)
    # The job runs as part of `loyalty jobs run`.
    with db() as session:
        assert wiring.run_area_due_work(session, batch_size=10)["promotion codes created"] == 1
    promo_id = row(db, claim_id).promotion_code_id  # type: ignore[union-attr]
    pi = payment_intent(customer=customer, amount=4700)
    checkout = {
        "id": new_id("cs"),
        "object": "checkout.session",
        "mode": "payment",
        "payment_status": "paid",
        "payment_intent": pi["id"],
        "customer": customer,
        "amount_total": 4700,
        "currency": "usd",
        "discounts": [{"promotion_code": promo_id}],
    }
    assert send(event("checkout.session.completed", checkout)).json["status"] == "processed"
    with db() as session:
        assert rewards.get_claim(session, claim_id).status == "used"
    assert run(db) == {**NOTHING, "promotion codes deactivated": 1}


def test_other_rewards_and_billing_off_make_no_promotion_code(
    app: Any, stripe_on: FakeStripe, db: Db, shopper: tuple[str, str], clock: FrozenClock
) -> None:
    member_id, _ = shopper
    gift = reward(db, kind="free_product", sku="MUG")
    claim_id, _ = claim(db, member_id, gift)
    assert row(db, claim_id) is None
    fixed = reward(db, kind="fixed_discount", amount=100, currency="USD")
    app.config["STRIPE_SECRET_KEY"] = None
    claim_id, _ = claim(db, member_id, fixed)
    assert row(db, claim_id) is None
    assert run(db) == NOTHING


def test_a_call_that_keeps_failing_gives_up_after_ten_tries(
    stripe_on: FakeStripe, db: Db, shopper: tuple[str, str], clock: FrozenClock
) -> None:
    member_id, _ = shopper
    claim_id, _ = claim(db, member_id, reward(db, kind="fixed_discount", amount=50, currency="USD"))
    with db() as session:
        row_ = session.get(StripePromotionCode, claim_id)
        assert row_ is not None
        row_.attempts = 9  # nine failures already
        session.commit()
    stripe_on.fail("/v1/coupons", 3)
    assert run(db) == {**NOTHING, "promotion code calls failed": 1}
    failed = row(db, claim_id)
    assert failed is not None and (failed.status, failed.next_attempt_at) == ("failed", None)
    clock.advance(dt.timedelta(days=1))
    assert run(db) == NOTHING
    with db() as session:  # cancelling the claim now leaves nothing to deactivate
        rewards.cancel_claim(session, claim_id=claim_id)
    assert row(db, claim_id).status == "inactive"  # type: ignore[union-attr]
