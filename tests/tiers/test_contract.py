"""The tier calls' contract says what the server enforces (findings of the schemathesis run):
each body here is accepted by both or refused by both."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.contract import assert_agree


@pytest.mark.parametrize(
    ("multiplier", "valid"),
    [
        ("0", False),
        ("0.5", False),
        ("100", False),
        ("99.99995", False),  # rounds to 100 at 4 places
        (99.9999, True),
        ("1", True),
        ("1.25", True),
    ],
)
def test_tier_multiplier_contract(
    app: Flask, client: FlaskClient, headers: dict[str, str], multiplier: Any, valid: bool
) -> None:
    body = {"code": "gold", "name": "Gold", "rank": 1, "threshold": 0}
    body["points_multiplier"] = multiplier
    assert_agree(app, client, headers, "POST", "/v1/program/tiers", body, valid=valid)


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"grace_days": 30.0}, True),
        ({"grace_days": 30.5}, False),
        ({"grace_days": "30"}, False),
    ],
)
def test_policy_contract(
    app: Flask, client: FlaskClient, headers: dict[str, str], body: dict[str, Any], valid: bool
) -> None:
    assert_agree(app, client, headers, "PATCH", "/v1/program/tier-policy", body, valid=valid)


@pytest.mark.parametrize(
    ("name", "valid"), [("   ", False), ("Gold\u0000", False), (" Gold ", True), ("金", True)]
)
def test_tier_name_contract(
    app: Flask, client: FlaskClient, headers: dict[str, str], name: str, valid: bool
) -> None:
    body = {"code": "gold", "name": name, "rank": 1, "threshold": 0}
    assert_agree(app, client, headers, "POST", "/v1/program/tiers", body, valid=valid)
