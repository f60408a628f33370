"""The points calls' contract says what the server enforces (findings of the schemathesis
run): each body here is accepted by both or refused by both."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from loyalty.ledger.rules import currency_exponent
from tests.contract import assert_agree, body_schema


@pytest.fixture
def member_id(client: FlaskClient, headers: dict[str, str]) -> str:
    member = client.post("/v1/members", json={"external_id": "ledger-contract"}, headers=headers)
    assert member.json is not None
    adjusted = client.post(
        f"/v1/members/{member.json['id']}/adjustments",
        json={"points": 1000, "reason": "opening balance"},
        headers=headers,
    )
    assert adjusted.status_code == 201
    return str(member.json["id"])


def _order(member_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "order_id": "W-1",
        "member_id": member_id,
        "total": 10_000,
        "currency": "USD",
        "items": [{"sku": "tee", "quantity": 2, "unit_price": 5000}],
        **changes,
    }


@pytest.mark.parametrize(
    ("changes", "valid"),
    [
        # Currencies: ISO 4217 codes with a minor unit, listed in the spec.
        ({"currency": "AAA"}, False),
        ({"currency": "XAU"}, False),  # gold has no minor unit
        ({"currency": "JPY"}, True),
        # Ids: anything but control characters (a no-break space is text).
        ({"order_id": "W\u00a01"}, True),
        ({"order_id": "W\u007f1"}, False),
        # A whole number written with a fraction is an integer, as JSON Schema counts it.
        ({"total": 10_000.0}, True),
        ({"total": 10_000.5}, False),
        ({"placed_at": "0213-08-27T04:48:26-00:26"}, False),
    ],
)
def test_order_contract(
    app: Flask,
    client: FlaskClient,
    headers: dict[str, str],
    member_id: str,
    changes: dict[str, Any],
    valid: bool,
) -> None:
    assert_agree(
        app, client, headers, "POST", "/v1/orders", _order(member_id, **changes), valid=valid
    )


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"refund_id": "R-1"}, False),  # amount or items
        ({"refund_id": "R-1", "amount": 100, "items": [{"sku": "tee", "quantity": 1}]}, False),
        ({"refund_id": "R-1", "amount": 100}, True),
        ({"refund_id": "R-1", "items": [{"sku": "tee", "quantity": 1}]}, True),
    ],
)
def test_refund_contract(
    app: Flask,
    client: FlaskClient,
    headers: dict[str, str],
    member_id: str,
    body: dict[str, Any],
    valid: bool,
) -> None:
    assert client.post("/v1/orders", json=_order(member_id), headers=headers).status_code == 201
    path = "/v1/orders/{order_id}/refunds"
    assert_agree(
        app, client, headers, "POST", path, body, valid=valid, url="/v1/orders/W-1/refunds"
    )


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"points": 0, "reason": "nothing"}, False),
        ({"points": 5, "reason": "   "}, False),
        ({"points": 5, "reason": "fix\u0007"}, False),
        ({"points": 5, "reason": " leading space is text"}, True),
        ({"points": -5, "reason": "duplicate order"}, True),
    ],
)
def test_adjustment_contract(
    app: Flask,
    client: FlaskClient,
    headers: dict[str, str],
    member_id: str,
    body: dict[str, Any],
    valid: bool,
) -> None:
    path = "/v1/members/{member_id}/adjustments"
    url = f"/v1/members/{member_id}/adjustments"
    assert_agree(app, client, headers, "POST", path, body, valid=valid, url=url)


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"pending_days": 30.0}, True),
        ({"pending_days": 30.5}, False),
        ({"hold_timeout_seconds": 6e2}, True),
    ],
)
def test_settings_contract(
    app: Flask, client: FlaskClient, headers: dict[str, str], body: dict[str, Any], valid: bool
) -> None:
    assert_agree(app, client, headers, "PATCH", "/v1/program/settings", body, valid=valid)


def test_the_spec_lists_the_currencies_the_server_accepts(app: Flask) -> None:
    schema = body_schema(app, "POST", "/v1/orders")
    codes = schema["components"]["schemas"]["Currency"]["enum"]
    assert codes and all(currency_exponent(code) is not None for code in codes)
    assert {"USD", "EUR", "JPY", "BHD"} <= set(codes) and "XAU" not in codes
