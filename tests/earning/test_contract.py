"""The earning calls' contract says what the server enforces (findings of the schemathesis
run): each body here is accepted by both or refused by both."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.contract import accepts, assert_agree, query_schema

WINDOW = {"starts_at": "2026-11-01T00:00:00Z", "ends_at": "2026-12-01T00:00:00Z"}


@pytest.mark.parametrize(
    ("multiplier", "valid"),
    [
        ("", False),
        ("0", False),
        ("0.00001", False),  # rounds to 0 at 4 places
        (0.00001, False),
        ("100.0001", False),
        ("0.0001", True),
        ("2.5", True),
        (2.5, True),
        ("100", True),
    ],
)
def test_product_multiplier_contract(
    app: Flask, client: FlaskClient, headers: dict[str, str], multiplier: Any, valid: bool
) -> None:
    body = {"scope": "sku", "match": "tee", "multiplier": multiplier}
    assert_agree(app, client, headers, "POST", "/v1/program/multipliers", body, valid=valid)


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"minimum_order_total": 500}, False),  # its currency comes with it
        ({"minimum_order_currency": "EUR"}, False),
        ({"minimum_order_total": 500, "minimum_order_currency": "AAA"}, False),
        ({"minimum_order_total": None, "minimum_order_currency": "EUR"}, False),
        ({"minimum_order_total": 500, "minimum_order_currency": "EUR"}, True),
        ({"minimum_order_total": None, "minimum_order_currency": None}, True),
        ({"excluded_categories": ["gift\u00a0cards"]}, True),
        ({"excluded_categories": ["gift\ncards"]}, False),
    ],
)
def test_earning_settings_contract(
    app: Flask, client: FlaskClient, headers: dict[str, str], body: dict[str, Any], valid: bool
) -> None:
    assert_agree(app, client, headers, "PATCH", "/v1/program/earning", body, valid=valid)


@pytest.mark.parametrize(
    ("changes", "valid"),
    [
        ({}, False),  # a multiplier, a bonus, or both
        ({"multiplier": None, "bonus_points": None}, False),
        ({"multiplier": "1"}, False),  # above 1
        ({"multiplier": "1.5"}, True),
        ({"bonus_points": 10}, True),
        ({"bonus_points": 10, "target": "all", "target_values": ["x"]}, False),
        ({"bonus_points": 10, "target_values": ["x"]}, False),  # all members by default
        ({"bonus_points": 10, "target": "stages", "target_values": []}, False),
        ({"bonus_points": 10, "target": "stages", "target_values": ["vip"]}, False),
        ({"bonus_points": 10, "target": "stages", "target_values": ["new", "silent"]}, True),
    ],
)
def test_campaign_contract(
    app: Flask,
    client: FlaskClient,
    headers: dict[str, str],
    changes: dict[str, Any],
    valid: bool,
) -> None:
    body = {"name": "November", **WINDOW, **changes}
    assert_agree(app, client, headers, "POST", "/v1/program/campaigns", body, valid=valid)


@pytest.mark.parametrize(("cursor", "valid"), [("", False), ("eyJhZnRlciI6IjAifQ", True)])
def test_campaign_cursor_contract(
    app: Flask, client: FlaskClient, headers: dict[str, str], cursor: str, valid: bool
) -> None:
    assert accepts(query_schema(app, "GET", "/v1/program/campaigns", "cursor"), cursor) is valid
    response = client.get("/v1/program/campaigns", query_string={"cursor": cursor}, headers=headers)
    assert (response.status_code == 422) is not valid, response.json
