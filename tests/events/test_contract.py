"""The spec and the server agree on webhook endpoint bodies: URLs, event types, replays."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.contract import assert_agree

HOOK = "https://hooks.example.com/loyalty"


@pytest.mark.parametrize(
    ("target", "valid"),
    [
        (HOOK, True),
        ("http://hooks.example.com", True),
        ("https://HOOKS.example.com:8443/a/b?c=d&e=%20", True),
        ("https://203.0.113.9/x", True),
        ("https://[2001:db8::1]:443/x", True),
        ("https://[::ffff:192.0.2.1]/x", True),
        ("https://xn--bcher-kva.example/x", True),
        ("ftp://hooks.example.com/x", False),
        ("HTTPS://hooks.example.com/x", False),
        ("https://hooks.example.com/a b", False),
        ("https://hooks.example.com/#x", False),
        ("https://user@hooks.example.com/", False),
        ("https://hooks.example.com:0/", False),
        ("https://hooks.example.com:65536/", False),
        ("https://-bad-.example.com/", False),
        ("https://[1::2::3]/", False),
        ("https://[::1%eth0]/", False),
        ("https://hooks.example.com/\u00e9", False),
        ("https://", False),
        ("https://h/" + "x" * 2040, False),
    ],
)
def test_urls(
    app: Flask, client: FlaskClient, headers: dict[str, str], target: str, valid: bool
) -> None:
    body = {"url": target, "event_types": ["*"]}
    assert_agree(app, client, headers, "POST", "/v1/webhooks/endpoints", body, valid=valid)


@pytest.mark.parametrize(
    ("event_types", "valid"),
    [
        (["*"], True),
        (["points.*", "points.accrued", "tier.upgraded"], True),
        (["points.accrued", "points.accrued"], True),
        ([], False),
        (["points.teleported"], False),
        (["points.**"], False),
        (["*.accrued"], False),
        ([None], False),
    ],
)
def test_event_types(
    app: Flask, client: FlaskClient, headers: dict[str, str], event_types: Any, valid: bool
) -> None:
    body = {"url": HOOK, "event_types": event_types}
    assert_agree(app, client, headers, "POST", "/v1/webhooks/endpoints", body, valid=valid)


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"event_id": "evt_x"}, True),
        ({"since": "2026-01-01T00:00:00Z"}, True),
        ({"since": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00:00Z"}, True),
        ({}, False),
        ({"until": "2026-02-01T00:00:00Z"}, False),
        ({"event_id": "evt_x", "since": "2026-01-01T00:00:00Z"}, False),
        ({"event_id": "evt_x", "until": "2026-01-01T00:00:00Z"}, False),
        ({"event_id": ""}, False),
        ({"event_id": "evt x"}, False),
    ],
)
def test_replay_bodies(
    app: Flask, client: FlaskClient, headers: dict[str, str], body: dict[str, Any], valid: bool
) -> None:
    created = client.post(
        "/v1/webhooks/endpoints", json={"url": HOOK, "event_types": ["*"]}, headers=headers
    ).json
    assert created is not None
    path = f"/v1/webhooks/endpoints/{created['id']}/replay"
    assert_agree(
        app,
        client,
        headers,
        "POST",
        "/v1/webhooks/endpoints/{endpoint_id}/replay",
        body,
        valid=valid,
        url=path,
    )


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({}, True),
        ({"first_order_enabled": False, "birthday_enabled": True}, True),
        ({"expiring_soon_enabled": False, "inactive_enabled": False}, True),
        ({"expiring_soon_days": 1}, True),
        ({"expiring_soon_days": 365}, True),
        ({"expiring_soon_days": 0}, False),
        ({"expiring_soon_days": 366}, False),
        ({"expiring_soon_days": 30.0}, True),
        ({"expiring_soon_days": 30.5}, False),
        ({"inactive_days": 3650}, True),
        ({"inactive_days": 3651}, False),
        ({"inactive_days": None}, False),
        ({"birthday_enabled": None}, False),
    ],
)
def test_lifecycle_settings(
    app: Flask, client: FlaskClient, headers: dict[str, str], body: dict[str, Any], valid: bool
) -> None:
    assert_agree(app, client, headers, "PATCH", "/v1/webhooks/lifecycle", body, valid=valid)
