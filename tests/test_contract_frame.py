"""What the API frame enforces is in the contract too (findings of the schemathesis run): the
Idempotency-Key header, whole numbers written with a fraction, timestamps."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from loyalty import jsonbody
from tests.contract import accepts, query_schema, served_spec


def _key_schema(app: Flask) -> dict[str, object]:
    operation = served_spec(app)["paths"]["/v1/members/{member_id}/adjustments"]["post"]
    [header] = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    return dict(header["schema"])


@pytest.mark.parametrize(
    ("key", "valid"),
    [("6f1c2e0a-redeem-1", True), ("a key with spaces", True), ("clé", False), ("a\tb", False)],
)
def test_idempotency_key_contract(
    app: Flask, client: FlaskClient, headers: dict[str, str], key: str, valid: bool
) -> None:
    assert accepts(_key_schema(app), key) is valid
    response = client.post(
        "/v1/members/mem_unknown/adjustments",
        json={"points": 5, "reason": "fix"},
        headers={**headers, "Idempotency-Key": key.encode().decode("latin-1")},
    )
    # A valid key gets as far as the unknown member.
    assert response.status_code == (404 if valid else 422), response.json


@pytest.mark.parametrize(
    ("text", "value"), [("70.0", 70), ("1e3", 1000), ("-0.0", 0), ("2.5", 2.5), ("1e19", 1e19)]
)
def test_whole_numbers_are_integers_however_written(text: str, value: object) -> None:
    parsed = jsonbody.loads('{"n": ' + text + "}")["n"]
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize(
    ("moment", "valid"),
    [
        ("2026-03-10T12:00:00Z", True),
        ("2026-03-10T12:00:00.5+01:00", True),
        ("1900-01-01T00:30:00-01:00", True),
        ("1900-01-01T00:30:00+01:00", False),  # 1899 in UTC
        ("9998-12-31T23:00:00+12:00", True),
        ("9998-12-31T23:00:00-12:00", False),  # 9999 in UTC
        ("9999-01-01T00:00:00Z", False),
        ("2026-03-10T12:00:60Z", False),  # a leap second Python cannot represent
        ("2026-03-10T12:00:00", False),  # no offset
    ],
)
def test_timestamp_contract(
    app: Flask, client: FlaskClient, headers: dict[str, str], moment: str, valid: bool
) -> None:
    assert accepts(query_schema(app, "GET", "/v1/members", "enrolled_after"), moment) is valid
    response = client.get("/v1/members", query_string={"enrolled_after": moment}, headers=headers)
    assert (response.status_code == 200) is valid, response.json
