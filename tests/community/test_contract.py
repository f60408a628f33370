"""The community calls' contract says what the server enforces (findings of the schemathesis
run): each body here is accepted by both or refused by both."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.contract import accepts, assert_agree, query_schema


@pytest.fixture
def event_type(client: FlaskClient, headers: dict[str, str]) -> str:
    body = {"name": "recycling.dropped_off", "properties": {"co2_kg": {"type": "number"}}}
    response = client.post("/v1/program/event-types", json=body, headers=headers)
    assert response.status_code == 201, response.json
    return "recycling.dropped_off"


@pytest.mark.parametrize(
    ("properties", "valid"),
    [
        ({"Bad-Name": {"type": "number"}}, False),
        ({"": {"type": "number"}}, False),
        ({f"p{i}": {"type": "string"} for i in range(21)}, False),
        ({"stars": {"type": "integer", "required": True}}, True),
    ],
)
def test_event_type_contract(
    app: Flask,
    client: FlaskClient,
    headers: dict[str, str],
    properties: dict[str, Any],
    valid: bool,
) -> None:
    body = {"name": "review.posted", "properties": properties}
    assert_agree(app, client, headers, "POST", "/v1/program/event-types", body, valid=valid)


@pytest.mark.parametrize(
    ("changes", "valid"),
    [
        ({"points": 0}, False),  # points, points per unit, or both
        ({}, False),
        ({"points": 5, "cap": 3}, False),  # cap and cap_period go together
        ({"points": 5, "cap_period": "day"}, False),
        ({"points": 5, "cap": 3, "cap_period": "day"}, True),
        ({"per_unit_property": "co2_kg"}, False),  # with points_per_unit
        ({"points_per_unit": "0", "per_unit_property": "co2_kg"}, False),
        ({"points_per_unit": "2", "per_unit_property": "co2_kg"}, True),
        ({"points_per_unit": 2.5, "per_unit_property": "co2_kg", "points": 0}, True),
    ],
)
def test_event_rule_contract(
    app: Flask,
    client: FlaskClient,
    headers: dict[str, str],
    event_type: str,
    changes: dict[str, Any],
    valid: bool,
) -> None:
    body = {"event_type": event_type, **changes}
    assert_agree(app, client, headers, "POST", "/v1/program/event-rules", body, valid=valid)


LEVELS = [{"name": "Bronze", "threshold": "1"}]


@pytest.mark.parametrize(
    ("changes", "valid"),
    [
        ({"rule": "streak", "levels": [{"name": "Zero", "threshold": "0"}]}, False),
        ({"rule": "streak", "levels": [{"name": "Week", "threshold": 7.0}]}, True),
        ({"rule": "streak", "event_type": "recycling.dropped_off"}, False),
        ({"rule": "event_count"}, False),  # counts events of a type
        ({"rule": "event_count", "event_type": "recycling.dropped_off"}, True),
        ({"rule": "property_sum", "event_type": "recycling.dropped_off"}, False),
        (
            {"rule": "property_sum", "event_type": "recycling.dropped_off", "property": "co2_kg"},
            True,
        ),
    ],
)
def test_badge_contract(
    app: Flask,
    client: FlaskClient,
    headers: dict[str, str],
    event_type: str,
    changes: dict[str, Any],
    valid: bool,
) -> None:
    body = {"name": "Badge", "levels": LEVELS, **changes}
    assert_agree(app, client, headers, "POST", "/v1/program/badges", body, valid=valid)


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"opted_in": True}, False),  # a display name to opt in
        ({"opted_in": True, "display_name": None}, False),
        ({"opted_in": True, "display_name": "Ada L."}, True),
        ({"opted_in": False}, True),
    ],
)
def test_leaderboard_profile_contract(
    app: Flask, client: FlaskClient, headers: dict[str, str], body: dict[str, Any], valid: bool
) -> None:
    member = client.post("/v1/members", json={"external_id": "lb-1"}, headers=headers).json
    assert member is not None
    path = "/v1/members/{member_id}/leaderboard-profile"
    url = f"/v1/members/{member['id']}/leaderboard-profile"
    assert_agree(app, client, headers, "PUT", path, body, valid=valid, url=url)


@pytest.mark.parametrize(
    ("body", "valid"), [({"streak_grace_days": 7.0}, True), ({"streak_grace_days": 8}, False)]
)
def test_community_settings_contract(
    app: Flask, client: FlaskClient, headers: dict[str, str], body: dict[str, Any], valid: bool
) -> None:
    path = "/v1/program/community-settings"
    assert_agree(app, client, headers, "PATCH", path, body, valid=valid)


def test_audit_cursor_contract(app: Flask, client: FlaskClient, headers: dict[str, str]) -> None:
    assert not accepts(query_schema(app, "GET", "/v1/audit", "cursor"), "")
    assert client.get("/v1/audit?cursor=", headers=headers).status_code == 422
