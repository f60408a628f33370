"""The referral calls' contract says what the server enforces (findings of the schemathesis
run): each body here is accepted by both or refused by both."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.contract import assert_agree


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"min_order_currency": "AAA"}, False),
        ({"min_order_currency": "Usd"}, False),
        ({"min_order_currency": "EUR"}, True),
        ({"min_order_currency": None}, True),
        ({"link_template": "https://shop.example/r/"}, False),  # where does the code go?
        ({"link_template": "ftp://shop.example/r/{code}"}, False),
        ({"link_template": "https://shop.example/r/{code}\t"}, False),
        ({"link_template": "https://shop.example/join?ref={code}"}, True),
        ({"velocity_limit": 5.0}, True),
    ],
)
def test_terms_contract(
    app: Flask, client: FlaskClient, headers: dict[str, str], body: dict[str, Any], valid: bool
) -> None:
    assert_agree(app, client, headers, "PATCH", "/v1/program/referrals", body, valid=valid)


@pytest.mark.parametrize(
    ("reason", "valid"), [("   ", False), ("ok\u0000", False), (" checked by phone", True)]
)
def test_review_reason_contract(
    app: Flask, client: FlaskClient, headers: dict[str, str], reason: str, valid: bool
) -> None:
    path = "/v1/program/referrals/{referral_id}/reject"
    url = "/v1/program/referrals/ref_unknown/reject"  # a valid body gets 404
    assert_agree(app, client, headers, "POST", path, {"reason": reason}, valid=valid, url=url)
