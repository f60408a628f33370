"""Order, refund and event ids belong to the storefront's channel, not to one credential:
rotated credentials refund old orders and replay old reports, two channels keep their own
ids, and orders are read back by id and per member."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from loyalty.auth import service as auth_service
from loyalty.auth.rules import SCOPES
from loyalty.clock import FrozenClock
from loyalty.db import get_database
from tests.test_problems import assert_problem

Headers = dict[str, str]
RECENT = "2026-02-20T10:00:00Z"  # 18 days before the test clock: points active at once


def client_of(app: Flask, channel_id: str = "chn_default") -> Headers:
    """Bearer headers of a new API client of ``channel_id``, with every scope."""
    with app.app_context():
        session = get_database(app).sessionmaker()
        try:
            new = auth_service.create_client(
                session, name="storefront", scopes=SCOPES, channel_id=channel_id
            )
            grant = auth_service.issue_token(
                session, client_id=new.client.id, client_secret=new.secret
            )
        finally:
            session.close()
    return {"Authorization": f"Bearer {grant.access_token}"}


@pytest.fixture
def pos_channel(session: Session) -> str:
    return auth_service.create_channel(session, name="Store POS").id


@pytest.fixture
def member_id(client: FlaskClient, app: Flask, clock: FrozenClock) -> str:
    response = client.post("/v1/members", json={"external_id": "c-1"}, headers=client_of(app))
    return str(response.json["id"])


def order(member_id: str, order_id: str = "A-1", **extra: Any) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "member_id": member_id,
        "total": 10000,
        "currency": "USD",
        "placed_at": RECENT,
        **extra,
    }


def test_rotated_credentials_keep_the_channels_orders(
    client: FlaskClient, app: Flask, member_id: str
) -> None:
    old, new = client_of(app), client_of(app)
    first = client.post("/v1/orders", json=order(member_id), headers=old)
    assert first.status_code == 201
    # The storefront rotated its credentials: its retry of the old order replays it ...
    again = client.post("/v1/orders", json=order(member_id), headers=new)
    assert (again.status_code, again.json) == (200, first.json)
    # ... it can read it and refund it ...
    read = client.get("/v1/orders/A-1", headers=new)
    assert read.status_code == 200
    refund = client.post(
        "/v1/orders/A-1/refunds", json={"refund_id": "R-1", "amount": 4000}, headers=new
    )
    assert refund.status_code == 201
    assert refund.json["points_reversed"] == 40
    # ... and the old credentials see the same refund.
    replay = client.post(
        "/v1/orders/A-1/refunds", json={"refund_id": "R-1", "amount": 4000}, headers=old
    )
    assert (replay.status_code, replay.json) == (200, refund.json)
    balance = client.get(f"/v1/members/{member_id}/balance", headers=new).json
    assert balance["available"] == 60


def test_two_channels_keep_their_own_ids(
    client: FlaskClient, app: Flask, member_id: str, pos_channel: str
) -> None:
    web, pos = client_of(app), client_of(app, pos_channel)
    assert client.post("/v1/orders", json=order(member_id), headers=web).status_code == 201
    assert (
        client.post("/v1/orders", json=order(member_id, total=5000), headers=pos).status_code == 201
    )
    assert client.get("/v1/orders/A-1", headers=web).json["total"] == 10000
    assert client.get("/v1/orders/A-1", headers=pos).json["total"] == 5000
    assert client.get("/v1/orders/A-1", headers=pos).json["channel_id"] == pos_channel
    # A refund applies to the channel's own order: 10000 is more than the POS order holds.
    refused = client.post(
        "/v1/orders/A-1/refunds", json={"refund_id": "R", "amount": 10000}, headers=pos
    )
    assert refused.status_code == 422
    assert client.get(f"/v1/members/{member_id}/balance", headers=web).json["available"] == 150


def test_an_order_read_back_with_its_items_and_refunds(
    client: FlaskClient, app: Flask, member_id: str, clock: FrozenClock
) -> None:
    headers = client_of(app)
    items = [
        {"sku": "A", "category": "tees", "quantity": 2, "unit_price": 3000},
        {"sku": "B", "quantity": 1, "unit_price": 6000},
    ]
    body = order(member_id, "B-1", total=9000, items=items, placed_at="2026-03-10T10:00:00Z")
    assert client.post("/v1/orders", json=body, headers=headers).status_code == 201
    client.post(
        "/v1/orders/B-1/refunds",
        json={"refund_id": "R-A", "items": [{"sku": "A", "quantity": 1}]},
        headers=headers,
    )
    read = client.get("/v1/orders/B-1", headers=headers)
    assert read.status_code == 200
    got = read.json
    assert got["status"] == "pending"
    assert (got["total"], got["amount_refunded"], got["points"], got["points_reversed"]) == (
        9000,
        2250,  # one of two tees: half of the tees' 4500 share of the discounted total
        90,
        23,
    )
    assert [(i["sku"], i["amount"], i["refunded_quantity"]) for i in got["items"]] == [
        ("A", 4500, 1),
        ("B", 4500, 0),
    ]
    assert [r["refund_id"] for r in got["refunds"]] == ["R-A"]
    clock.advance(dt.timedelta(days=15))
    assert client.get("/v1/orders/B-1", headers=headers).json["status"] == "active"
    assert_problem(client.get("/v1/orders/nope", headers=headers), 404, "order-not-found")


def test_a_members_orders_from_every_channel_a_page_at_a_time(
    client: FlaskClient, app: Flask, member_id: str, pos_channel: str
) -> None:
    web, pos = client_of(app), client_of(app, pos_channel)
    for number in range(3):
        client.post("/v1/orders", json=order(member_id, f"W-{number}"), headers=web)
    client.post("/v1/orders", json=order(member_id, "P-0"), headers=pos)
    first = client.get(f"/v1/members/{member_id}/orders?limit=3", headers=web)
    assert first.status_code == 200
    assert [o["order_id"] for o in first.json["items"]] == ["P-0", "W-2", "W-1"]
    rest = client.get(
        f"/v1/members/{member_id}/orders?limit=3&cursor={first.json['next_cursor']}",
        headers=web,
    )
    assert [o["order_id"] for o in rest.json["items"]] == ["W-0"]
    assert rest.json["next_cursor"] is None
    assert_problem(client.get("/v1/members/mem_x/orders", headers=web), 404, "member-not-found")


def test_events_are_per_channel_and_bounded_in_time(
    client: FlaskClient, app: Flask, member_id: str, pos_channel: str, session: Session
) -> None:
    from loyalty.community import service as community_service

    community_service.create_event_type(session, name="review.posted", actor="t")
    web, pos = client_of(app), client_of(app, pos_channel)
    event = {
        "event_id": "ev-1",
        "member_id": member_id,
        "type": "review.posted",
        "occurred_at": "2026-03-09T10:00:00Z",
    }
    assert client.post("/v1/events", json=event, headers=web).status_code == 201
    assert client.post("/v1/events", json=event, headers=client_of(app)).status_code == 200
    assert client.post("/v1/events", json=event, headers=pos).status_code == 201
    old = {**event, "event_id": "ev-old", "occurred_at": "2026-01-01T00:00:00Z"}
    assert_problem(client.post("/v1/events", json=old, headers=web), 422, "event-too-old")


def test_clients_are_created_in_a_channel(session: Session, pos_channel: str) -> None:
    from loyalty.auth.errors import ChannelExistsError, ChannelNotFoundError

    new = auth_service.create_client(
        session, name="till 1", scopes=["points:accrue"], channel_id=pos_channel
    )
    assert new.client.channel_id == pos_channel
    with pytest.raises(ChannelNotFoundError):
        auth_service.create_client(session, name="x", scopes=["points:accrue"], channel_id="nope")
    with pytest.raises(ChannelExistsError):
        auth_service.create_channel(session, name="Store POS")
    assert [c.id for c in auth_service.list_channels(session)][0] == "chn_default"


def test_channels_from_the_command_line(app: Flask, make_headers: Callable[..., Headers]) -> None:
    import json

    from loyalty.cli import main

    runner = app.test_cli_runner()
    made = runner.invoke(main, ["channels", "create", "Mobile app", "--json"])
    assert made.exit_code == 0, made.output
    channel_id = json.loads(made.output)["channel_id"]
    listed = runner.invoke(main, ["channels", "list"])
    assert "chn_default" in listed.output and channel_id in listed.output
    client = runner.invoke(
        main, ["clients", "create", "app", "--all-scopes", "--channel", channel_id, "--json"]
    )
    assert json.loads(client.output)["channel_id"] == channel_id
    missing = runner.invoke(main, ["clients", "create", "x", "--all-scopes", "--channel", "no"])
    assert missing.exit_code != 0 and "No channel" in missing.output
