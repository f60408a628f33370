"""The webhook endpoint calls over HTTP: create, list, get, change, delete, rotate, the
delivery log and replays; problem+json errors; secrets shown at create and rotate only."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from loyalty.audit.models import AuditRecord
from loyalty.clock import FrozenClock
from loyalty.events import delivery
from loyalty.idempotency import IdempotencyRecord
from tests.events.conftest import received, record, url

ENDPOINTS = "/v1/webhooks/endpoints"
HOOK = "https://hooks.example.com/loyalty"


def create(client: FlaskClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post(
        ENDPOINTS, json={"url": HOOK, "event_types": ["points.*"], **body}, headers=headers
    )
    assert response.status_code == 201, response.json
    created: dict[str, Any] = response.json  # type: ignore[assignment]
    return created


def test_create_shows_the_secret_once(client: FlaskClient, headers: dict[str, str]) -> None:
    created = create(client, headers, description="order emails")
    assert created["id"].startswith("whe_")
    assert created["secret"].startswith("whsec_")
    assert {k: created[k] for k in ("url", "event_types", "enabled", "description")} == {
        "url": HOOK,
        "event_types": ["points.*"],
        "enabled": True,
        "description": "order emails",
    }
    assert created["disabled_reason"] is None and created["previous_secret_expires_at"] is None

    shown = client.get(f"{ENDPOINTS}/{created['id']}", headers=headers).json
    assert shown is not None and "secret" not in shown
    assert {k: v for k, v in created.items() if k != "secret"} == shown
    page = client.get(ENDPOINTS, headers=headers).json
    assert page is not None and page["items"] == [shown]
    changed = client.patch(
        f"{ENDPOINTS}/{created['id']}", json={"description": None}, headers=headers
    ).json
    assert changed is not None and "secret" not in changed


def test_secrets_are_stored_sealed_and_never_in_the_audit_log(
    client: FlaskClient, headers: dict[str, str], session: Session
) -> None:
    created = create(client, headers)
    rotated = client.post(f"{ENDPOINTS}/{created['id']}/rotate-secret", json={}, headers=headers)
    assert rotated.status_code == 200 and rotated.json is not None
    secrets = [created["secret"], rotated.json["secret"]]
    dump = json.dumps(
        [list(row) for row in session.execute(text("SELECT * FROM webhook_endpoints"))],
        default=str,
    ) + json.dumps([r.after for r in session.scalars(select(AuditRecord))], default=str)
    for secret in secrets:
        assert secret not in dump and secret.removeprefix("whsec_") not in dump


def test_an_idempotent_create_replays_the_secret_but_stores_it_sealed(
    client: FlaskClient, headers: dict[str, str], session: Session
) -> None:
    keyed = {**headers, "Idempotency-Key": "create-hook-1"}
    body = {"url": HOOK, "event_types": ["*"]}
    first = client.post(ENDPOINTS, json=body, headers=keyed)
    again = client.post(ENDPOINTS, json=body, headers=keyed)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.data == first.data
    assert len(client.get(ENDPOINTS, headers=headers).json["items"]) == 1  # type: ignore[index]
    stored = session.scalar(
        select(IdempotencyRecord.body).where(IdempotencyRecord.key == "create-hook-1")
    )
    assert stored is not None and stored.startswith("sealed:")
    assert first.json is not None and first.json["secret"] not in stored


def test_update_validates_and_enabling_clears_the_reason(
    client: FlaskClient, headers: dict[str, str]
) -> None:
    created = create(client, headers)
    path = f"{ENDPOINTS}/{created['id']}"
    off = client.patch(path, json={"enabled": False}, headers=headers).json
    assert off is not None and off["enabled"] is False
    changed = client.patch(
        path,
        json={"url": "https://other.example.com/h?x=1", "event_types": ["*", "*"], "enabled": True},
        headers=headers,
    ).json
    assert changed is not None
    assert (changed["url"], changed["event_types"], changed["enabled"]) == (
        "https://other.example.com/h?x=1",
        ["*"],
        True,
    )
    audit = client.get(f"/v1/audit?entity_id={created['id']}", headers=headers).json
    assert audit is not None
    assert [r["action"] for r in audit["items"]] == ["updated", "updated", "created"]


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"url": "ftp://hooks.example.com/x", "event_types": ["*"]}, "#/url"),
        ({"url": "hooks.example.com/x", "event_types": ["*"]}, "#/url"),
        ({"url": "https://user:pw@hooks.example.com/x", "event_types": ["*"]}, "#/url"),
        ({"url": "https://hooks.example.com/x#frag", "event_types": ["*"]}, "#/url"),
        ({"url": "https://hooks.example.com:99999/x", "event_types": ["*"]}, "#/url"),
        ({"url": HOOK, "event_types": ["points.teleported"]}, "#/event_types/0"),
        ({"url": HOOK, "event_types": ["points"]}, "#/event_types/0"),
        ({"url": HOOK, "event_types": []}, "#/event_types"),
        ({"url": HOOK}, "#/event_types"),
        ({"url": HOOK, "event_types": ["*"], "secret": "whsec_mine"}, "#"),  # unknown field
    ],
)
def test_invalid_bodies_are_422_problems(
    client: FlaskClient, headers: dict[str, str], body: dict[str, Any], pointer: str
) -> None:
    response = client.post(ENDPOINTS, json=body, headers=headers)
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    problem = response.json
    assert problem is not None and problem["code"] == "validation-failed"
    assert pointer in [error["pointer"] for error in problem["errors"]]
    assert "whsec_mine" not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("get", "", None),
        ("patch", "", {"enabled": True}),
        ("delete", "", None),
        ("post", "/rotate-secret", {}),
        ("get", "/deliveries", None),
        ("post", "/replay", {"event_id": "evt_x"}),
    ],
)
def test_unknown_endpoints_are_404(
    client: FlaskClient, headers: dict[str, str], method: str, suffix: str, body: Any
) -> None:
    response = client.open(
        f"{ENDPOINTS}/whe_nope{suffix}", method=method.upper(), json=body, headers=headers
    )
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert response.json is not None and response.json["code"] == "webhook-endpoint-not-found"


def test_delete_removes_the_endpoint(client: FlaskClient, headers: dict[str, str]) -> None:
    created = create(client, headers)
    path = f"{ENDPOINTS}/{created['id']}"
    assert client.delete(path, headers=headers).status_code == 204
    assert client.get(path, headers=headers).status_code == 404


def test_lists_page_with_cursors(client: FlaskClient, headers: dict[str, str]) -> None:
    ids = [create(client, headers)["id"] for _ in range(3)]
    first = client.get(f"{ENDPOINTS}?limit=2", headers=headers).json
    assert first is not None and [e["id"] for e in first["items"]] == ids[:2]
    rest = client.get(f"{ENDPOINTS}?limit=2&cursor={first['next_cursor']}", headers=headers).json
    assert rest is not None and [e["id"] for e in rest["items"]] == ids[2:]
    assert rest["next_cursor"] is None
    client.patch(f"{ENDPOINTS}/{ids[1]}", json={"enabled": False}, headers=headers)
    off = client.get(f"{ENDPOINTS}?enabled=false", headers=headers).json
    assert off is not None and [e["id"] for e in off["items"]] == [ids[1]]


def test_the_delivery_log_and_replays(
    client: FlaskClient,
    headers: dict[str, str],
    session: Session,
    receiver: HTTPServer,
    clock: FrozenClock,
) -> None:
    created = create(client, headers, url=url(receiver), event_types=["*"])
    path = f"{ENDPOINTS}/{created['id']}"
    event_ids = [record(session) for _ in range(3)]
    delivery.deliver_due(session)

    log = client.get(f"{path}/deliveries?limit=2", headers=headers).json
    assert log is not None and len(log["items"]) == 2 and log["next_cursor"]
    newest = log["items"][0]
    assert newest["event_id"] == event_ids[-1] and newest["event_type"] == "points.accrued"
    assert (newest["attempt"], newest["status_code"], newest["succeeded"]) == (1, 204, True)
    assert newest["error"] is None and newest["next_attempt_at"] is None
    assert isinstance(newest["duration_ms"], int) and newest["replay"] is False
    rest = client.get(f"{path}/deliveries?cursor={log['next_cursor']}", headers=headers).json
    assert rest is not None and [a["event_id"] for a in rest["items"]] == event_ids[:1]

    replayed = client.post(f"{path}/replay", json={"event_id": event_ids[0]}, headers=headers)
    assert replayed.status_code == 202 and replayed.json == {"queued": 1}
    since = "2026-03-10T00:00:00Z"
    ranged = client.post(f"{path}/replay", json={"since": since}, headers=headers)
    assert ranged.status_code == 202 and ranged.json == {"queued": 3}
    delivery.deliver_due(session)
    assert len(received(receiver)) == 3 + 4

    for body, status in (
        ({"event_id": "evt_unknown"}, 404),
        ({}, 422),
        ({"event_id": event_ids[0], "since": since}, 422),
        ({"until": since}, 422),
        ({"since": since, "until": since}, 422),
    ):
        response = client.post(f"{path}/replay", json=body, headers=headers)
        assert response.status_code == status, (body, response.json)
    client.patch(path, json={"enabled": False}, headers=headers)
    refused = client.post(f"{path}/replay", json={"event_id": event_ids[0]}, headers=headers)
    assert refused.status_code == 409
    assert refused.json is not None and refused.json["code"] == "webhook-endpoint-disabled"


def test_rotation_answers_the_new_secret_and_the_overlap(
    client: FlaskClient, headers: dict[str, str], clock: FrozenClock
) -> None:
    created = create(client, headers)
    path = f"{ENDPOINTS}/{created['id']}/rotate-secret"
    rotated = client.post(path, json={"overlap_seconds": 3600}, headers=headers).json
    assert rotated is not None and rotated["secret"] != created["secret"]
    assert rotated["previous_secret_expires_at"] == "2026-03-10T13:00:00Z"
    too_long = client.post(path, json={"overlap_seconds": 8 * 86400}, headers=headers)
    assert too_long.status_code == 422


def test_the_scope_is_webhooks_manage(
    client: FlaskClient, make_headers: Callable[..., dict[str, str]]
) -> None:
    assert client.get(ENDPOINTS, headers=make_headers("program:write")).status_code == 403
    assert client.get(ENDPOINTS, headers=make_headers("webhooks:manage")).status_code == 200


# --- lifecycle triggers' settings ------------------------------------------------------------

LIFECYCLE = "/v1/webhooks/lifecycle"
DEFAULTS = {
    "first_order_enabled": True,
    "expiring_soon_enabled": True,
    "birthday_enabled": True,
    "inactive_enabled": True,
    "expiring_soon_days": 30,
    "inactive_days": 90,
}


def test_lifecycle_settings_are_read_and_changed_with_an_audit_record(
    client: FlaskClient, headers: dict[str, str], session: Session, clock: FrozenClock
) -> None:
    got = client.get(LIFECYCLE, headers=headers)
    assert got.status_code == 200
    assert {k: v for k, v in got.json.items() if k in DEFAULTS} == DEFAULTS  # type: ignore[union-attr]

    changes = {"birthday_enabled": False, "inactive_days": 60}
    changed = client.patch(LIFECYCLE, json=changes, headers=headers)
    assert changed.status_code == 200, changed.json
    body: dict[str, Any] = changed.json  # type: ignore[assignment]
    assert {k: body[k] for k in DEFAULTS} == {**DEFAULTS, **changes}
    assert body["updated_at"] == "2026-03-10T12:00:00Z"
    assert body["updated_by"].startswith("cli_")
    assert client.get(LIFECYCLE, headers=headers).json == body
    # The same change again changes nothing: audited once.
    assert client.patch(LIFECYCLE, json=changes, headers=headers).status_code == 200

    [audit] = session.scalars(
        select(AuditRecord).where(AuditRecord.entity_type == "lifecycle_settings")
    )
    assert (audit.action, audit.actor) == ("updated", body["updated_by"])
    assert audit.before == DEFAULTS and audit.after == {**DEFAULTS, **changes}


@pytest.mark.parametrize(
    "body",
    [
        {"expiring_soon_days": 0},
        {"expiring_soon_days": 366},
        {"inactive_days": 3651},
        {"inactive_enabled": "maybe"},
        {"every_day": True},
    ],
)
def test_lifecycle_settings_out_of_range_are_refused(
    client: FlaskClient, headers: dict[str, str], body: dict[str, Any]
) -> None:
    refused = client.patch(LIFECYCLE, json=body, headers=headers)
    assert refused.status_code == 422
    assert refused.json["code"] == "validation-failed"  # type: ignore[index]
    assert client.get(LIFECYCLE, headers=headers).json["inactive_days"] == 90  # type: ignore[index]
