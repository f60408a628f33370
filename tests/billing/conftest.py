"""Billing test harness: a fake Stripe on loopback (localstripe behind a small front server,
see `tests.billing.fake_stripe`), the app configured for it, Stripe events signed the way
Stripe documents (``t=<unix time>,v1=<HMAC-SHA256 of "t.payload">``) and sent to the webhook,
and the ledger's invariants checked after every test."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from loyalty.db import get_database
from loyalty.members import service as members_service
from tests.billing.fake_stripe import FakeStripe, LocalStripe
from tests.support import START, _invariants_hold, clock

WEBHOOK_SECRET = "whsec_test_" + "s3cr3t" * 6
SECRET_KEY = "sk_test_" + "k3y" * 10
WEBHOOK_URL = "/v1/billing/stripe/webhook"
_ids = itertools.count(1)


@pytest.fixture(scope="session")
def fake_stripe() -> Iterator[FakeStripe]:
    localstripe = LocalStripe()
    front = FakeStripe(localstripe)
    try:
        yield front
    finally:
        front.stop()
        localstripe.stop()


@pytest.fixture
def stripe_on(app: Flask, fake_stripe: FakeStripe) -> Iterator[FakeStripe]:
    """Billing configured against the fake Stripe for this test (the app is shared: the
    settings are put back after)."""
    settings = {
        "STRIPE_SECRET_KEY": SECRET_KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_API_BASE": fake_stripe.url,
        "STRIPE_SUCCESS_URL": "https://shop.example/thanks",
        "STRIPE_CANCEL_URL": "https://shop.example/cart",
    }
    before = {key: app.config.get(key) for key in settings}
    app.config.update(settings)
    fake_stripe.reset()
    try:
        yield fake_stripe
    finally:
        app.config.update(before)


def new_id(prefix: str) -> str:
    return f"{prefix}_test{next(_ids)}{secrets.token_hex(4)}"


def signature(payload: str, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    """The Stripe-Signature header, computed as Stripe documents it."""
    timestamp = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def event(type_: str, obj: dict[str, Any], *, created: int | None = None) -> dict[str, Any]:
    return {
        "id": new_id("evt"),
        "object": "event",
        "type": type_,
        "created": int(START.timestamp()) if created is None else created,
        "livemode": False,
        "data": {"object": obj},
    }


@pytest.fixture
def send(client: FlaskClient) -> Callable[..., Any]:
    """POST an event to the webhook, signed (or with the header given)."""

    def post(body: dict[str, Any] | str, *, header: str | None = None) -> Any:
        payload = body if isinstance(body, str) else json.dumps(body)
        return client.post(
            WEBHOOK_URL,
            data=payload,
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": signature(payload) if header is None else header,
            },
        )

    return post


@pytest.fixture
def db(app: Flask) -> Callable[[], AbstractContextManager[Session]]:
    """Short-lived sessions (``with db() as session:``), closed before the next request, so
    that their savepoints and the requests' nest properly in the test's transaction."""

    @contextmanager
    def open_session() -> Iterator[Session]:
        with app.app_context():
            session = get_database(app).sessionmaker()
            try:
                yield session
            finally:
                session.close()

    return open_session


@pytest.fixture
def member(db: Callable[[], AbstractContextManager[Session]]) -> Callable[..., str]:
    def make(**kwargs: Any) -> str:
        with db() as session:
            created, _ = members_service.enroll_member(
                session, external_id=new_id("shopper"), **kwargs
            )
            return created.id

    return make


def payment_intent(
    *,
    customer: str | None,
    amount: int,
    currency: str = "usd",
    member_id: str | None = None,
    pi_id: str | None = None,
) -> dict[str, Any]:
    return {
        "id": pi_id or new_id("pi"),
        "object": "payment_intent",
        "amount": amount,
        "amount_received": amount,
        "currency": currency,
        "customer": customer,
        "status": "succeeded",
        "created": int(START.timestamp()),
        "metadata": {"loyalty_member_id": member_id} if member_id else {},
    }


def refund(*, pi_id: str, amount: int, refund_id: str | None = None) -> dict[str, Any]:
    return {
        "id": refund_id or new_id("re"),
        "object": "refund",
        "amount": amount,
        "payment_intent": pi_id,
        "charge": new_id("ch"),
        "status": "succeeded",
        "currency": "usd",
    }
