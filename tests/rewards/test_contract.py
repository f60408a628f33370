"""The perk and reward calls' contract says what the server enforces (findings of the
schemathesis run): each body here is accepted by both or refused by both."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.contract import assert_agree

REWARD = {"name": "Reward", "points_cost": 100}


@pytest.mark.parametrize(
    ("changes", "valid"),
    [
        # Each kind carries its own value fields and none of the others.
        ({"kind": "custom", "percent": 10}, False),
        ({"kind": "custom", "percent": None, "sku": None}, True),
        ({"kind": "fixed_discount", "amount": 500}, False),
        ({"kind": "fixed_discount", "amount": 500, "currency": "AAA"}, False),
        ({"kind": "fixed_discount", "amount": 500, "currency": "EUR"}, True),
        ({"kind": "fixed_discount", "amount": 500, "currency": "EUR", "sku": "x"}, False),
        ({"kind": "percentage_discount"}, False),
        ({"kind": "percentage_discount", "percent": 15}, True),
        ({"kind": "free_product", "sku": "mug"}, True),
        # Names are text: a no-break space is fine, a control character is not.
        ({"kind": "custom", "name": "10\u00a0% off"}, True),
        ({"kind": "custom", "name": "10%\u001b off"}, False),
    ],
)
def test_reward_contract(
    app: Flask,
    client: FlaskClient,
    headers: dict[str, str],
    changes: dict[str, Any],
    valid: bool,
) -> None:
    body = {**REWARD, **changes}
    assert_agree(app, client, headers, "POST", "/v1/program/rewards", body, valid=valid)


@pytest.mark.parametrize(
    ("changes", "valid"),
    [
        ({"kind": "custom", "percent": 10}, False),
        ({"kind": "free_shipping", "bonus_points": 10}, False),
        ({"kind": "free_shipping"}, True),
        ({"kind": "exclusive_discount"}, False),
        ({"kind": "exclusive_discount", "percent": 10}, True),
        ({"kind": "birthday_gift"}, False),  # bonus points, a reward, or both
        ({"kind": "birthday_gift", "bonus_points": None}, False),
        ({"kind": "birthday_gift", "bonus_points": 50, "percent": 5}, False),
        ({"kind": "birthday_gift", "bonus_points": 50}, True),
    ],
)
def test_perk_contract(
    app: Flask,
    client: FlaskClient,
    headers: dict[str, str],
    changes: dict[str, Any],
    valid: bool,
) -> None:
    body = {"name": "Perk", **changes}
    assert_agree(app, client, headers, "POST", "/v1/program/perks", body, valid=valid)
