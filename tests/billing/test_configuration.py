"""Billing's configuration and a tier's Stripe price."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from loyalty import create_app
from loyalty.config import ConfigError
from tests.conftest import base_config
from tests.test_problems import assert_problem

Headers = dict[str, str]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"STRIPE_SECRET_KEY": "sk_test_1"}, "set LOYALTY_STRIPE_WEBHOOK_SECRET too"),
        ({"STRIPE_WEBHOOK_SECRET": "whsec_1"}, "set LOYALTY_STRIPE_SECRET_KEY too"),
        ({"STRIPE_API_BASE": "localhost:12111"}, "LOYALTY_STRIPE_API_BASE must be an http(s) URL"),
        ({"STRIPE_GRACE_DAYS": -1}, "LOYALTY_STRIPE_GRACE_DAYS must be an integer from 0"),
        ({"STRIPE_WEBHOOK_TOLERANCE": "300"}, "LOYALTY_STRIPE_WEBHOOK_TOLERANCE must be"),
    ],
)
def test_unusable_stripe_settings_stop_the_start(
    database_url: str, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        create_app({**base_config(database_url), **settings})
    assert "sk_test_1" not in str(error.value) and "whsec_1" not in str(error.value)


def test_environment_settings_are_read_as_strings(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOYALTY_STRIPE_SECRET_KEY", "sk_test_123")
    monkeypatch.setenv("LOYALTY_STRIPE_WEBHOOK_SECRET", "whsec_456")
    monkeypatch.setenv("LOYALTY_STRIPE_GRACE_DAYS", "3")
    app = create_app(base_config(database_url))
    assert app.config["STRIPE_SECRET_KEY"] == "sk_test_123"
    assert app.config["STRIPE_GRACE_DAYS"] == 3


def test_a_tier_carries_its_stripe_price(client: FlaskClient, headers: Headers) -> None:
    gold = {"code": "gold", "name": "Gold", "rank": 3, "threshold": 1000}
    made = client.post(
        "/v1/program/tiers", json={**gold, "stripe_price_id": "price_Gold1"}, headers=headers
    )
    assert made.status_code == 201 and made.json["stripe_price_id"] == "price_Gold1"
    plain = client.post(
        "/v1/program/tiers",
        json={"code": "silver", "name": "Silver", "rank": 2, "threshold": 500},
        headers=headers,
    )
    assert plain.json["stripe_price_id"] is None
    taken = client.patch(
        "/v1/program/tiers/silver", json={"stripe_price_id": "price_Gold1"}, headers=headers
    )
    body = assert_problem(taken, 409, "tier-price-taken")
    assert body["tier"] == "gold"
    assert_problem(
        client.patch("/v1/program/tiers/silver", json={"stripe_price_id": "x y"}, headers=headers),
        422,
        "validation-failed",
    )
    moved = client.patch("/v1/program/tiers/gold", json={"stripe_price_id": None}, headers=headers)
    assert moved.status_code == 200 and moved.json["stripe_price_id"] is None
    again = client.patch(
        "/v1/program/tiers/silver", json={"stripe_price_id": "price_Gold1"}, headers=headers
    )
    assert again.status_code == 200 and again.json["stripe_price_id"] == "price_Gold1"
