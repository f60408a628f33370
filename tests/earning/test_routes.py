"""The earning calls over HTTP: earning settings, multipliers, campaigns, previews, the
audit trail; their errors as problems."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from loyalty.clock import FrozenClock
from tests.test_problems import assert_problem

Headers = dict[str, str]


@pytest.fixture
def api(client: FlaskClient, headers: Headers, clock: FrozenClock) -> Callable[..., Any]:
    def call(method: str, url: str, body: Any = None, headers_: Headers | None = None) -> Any:
        kwargs: dict[str, Any] = {"headers": headers_ or headers}
        if body is not None:
            kwargs["json"] = body
        return getattr(client, method)(url, **kwargs)

    return call


@pytest.fixture
def member_id(api: Callable[..., Any]) -> str:
    response = api("post", "/v1/members", {"external_id": "shopper-1"})
    assert response.status_code == 201
    return str(response.json["id"])


CART = {
    "total": 12000,
    "currency": "USD",
    "items": [
        {"sku": "boot", "category": "shoes", "quantity": 1, "unit_price": 8000},
        {"sku": "card", "category": "gift-cards", "quantity": 1, "unit_price": 4000},
    ],
}


def test_configure_earning_then_preview_and_order(api: Callable[..., Any], member_id: str) -> None:
    settings = api("patch", "/v1/program/earning", {"excluded_categories": ["gift-cards"]})
    assert settings.status_code == 200
    assert settings.json["excluded_categories"] == ["gift-cards"]
    assert settings.json["daily_cap"] is None
    created = api(
        "post",
        "/v1/program/multipliers",
        {"scope": "category", "match": "shoes", "multiplier": "2"},
    )
    assert created.status_code == 201
    assert created.json["multiplier"] == "2.0000"
    assert api("get", "/v1/program/multipliers").json["items"] == [created.json]
    campaign = api(
        "post",
        "/v1/program/campaigns",
        {
            "name": "Double Points November",
            "starts_at": "2026-03-01T00:00:00Z",
            "ends_at": "2026-04-01T00:00:00Z",
            "multiplier": 2,
            "budget": 1000,
        },
    )
    assert campaign.status_code == 201, campaign.json
    assert campaign.json["status"] == "running"
    assert campaign.json["target"] == "all"

    preview = api("post", "/v1/orders/preview", {"member_id": member_id, **CART})
    assert preview.status_code == 200
    assert preview.json == {
        "member_id": member_id,
        "points": 240,
        "breakdown": [
            {"rule": "base", "kind": "base", "label": "base", "points": 80},
            {
                "rule": f"product:{created.json['id']}",
                "kind": "product",
                "label": "shoes x2",
                "points": 80,
            },
            {
                "rule": f"campaign:{campaign.json['id']}",
                "kind": "campaign",
                "label": "Double Points November x2",
                "points": 80,
            },
        ],
        "description": "base 80 + shoes x2 +80 + Double Points November x2 +80",
        "items": [{"sku": "boot", "points": 240}, {"sku": "card", "points": 0}],
    }
    placed = api("post", "/v1/orders", {"order_id": "A-1", "member_id": member_id, **CART})
    assert placed.status_code == 201
    assert placed.json["points"] == 240
    assert placed.json["breakdown"] == preview.json["breakdown"]
    ledger = api("get", f"/v1/members/{member_id}/ledger").json["items"]
    assert ledger[0]["reason"] == preview.json["description"]
    spent = api("get", f"/v1/program/campaigns/{campaign.json['id']}").json
    assert spent["spent"] == 80
    running = api("get", "/v1/program/campaigns?status=running").json
    assert [c["id"] for c in running["items"]] == [campaign.json["id"]]
    assert api("get", "/v1/program/campaigns?status=ended").json["items"] == []

    audit = api("get", "/v1/audit?entity_type=campaign").json["items"]
    assert [a["action"] for a in audit] == ["created"]
    assert audit[0]["after"]["name"] == "Double Points November"
    assert len(api("get", "/v1/audit").json["items"]) == 3


def test_campaign_changes_pause_and_delete(api: Callable[..., Any]) -> None:
    body = {
        "name": "Weekend",
        "starts_at": "2026-03-14T00:00:00Z",
        "ends_at": "2026-03-16T00:00:00Z",
        "bonus_points": 50,
    }
    created = api("post", "/v1/program/campaigns", body).json
    assert created["status"] == "scheduled"
    paused = api("patch", f"/v1/program/campaigns/{created['id']}", {"active": False})
    assert paused.json["status"] == "paused"
    assert api("delete", f"/v1/program/campaigns/{created['id']}").status_code == 204
    assert_problem(api("get", f"/v1/program/campaigns/{created['id']}"), 404, "campaign-not-found")
    assert_problem(
        api("patch", "/v1/program/campaigns/cmp_nope", {"active": False}), 404, "campaign-not-found"
    )


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"name": "x", "starts_at": "2026-03-01T00:00:00Z"}, "/ends_at"),
        (
            {
                "name": "x",
                "starts_at": "2026-03-02T00:00:00Z",
                "ends_at": "2026-03-01T00:00:00Z",
                "multiplier": 2,
            },
            "/ends_at",
        ),
        (
            {"name": "x", "starts_at": "2026-03-01T00:00:00Z", "ends_at": "2026-03-02T00:00:00Z"},
            "/multiplier",
        ),
        (
            {
                "name": "x",
                "starts_at": "2026-03-01T00:00:00Z",
                "ends_at": "2026-03-02T00:00:00Z",
                "multiplier": "1",
            },
            "/multiplier",
        ),
        (
            {
                "name": "x",
                "starts_at": "2026-03-01T00:00:00Z",
                "ends_at": "2026-03-02T00:00:00Z",
                "bonus_points": 5,
                "target": "tiers",
                "target_values": ["diamond"],
            },
            "/target_values",
        ),
        (
            {
                "name": "x",
                "starts_at": "2026-03-01T00:00:00Z",
                "ends_at": "2026-03-02T00:00:00Z",
                "bonus_points": 5,
                "target": "everyone",
            },
            "/target",
        ),
    ],
)
def test_bad_campaigns_are_422_with_a_pointer(
    api: Callable[..., Any], body: dict[str, Any], pointer: str
) -> None:
    problem = assert_problem(api("post", "/v1/program/campaigns", body), 422, "validation-failed")
    assert "#" + pointer in [error["pointer"] for error in problem["errors"]]


def test_multiplier_errors(api: Callable[..., Any]) -> None:
    body = {"scope": "sku", "match": "boot", "multiplier": "1.5"}
    assert api("post", "/v1/program/multipliers", body).status_code == 201
    assert_problem(api("post", "/v1/program/multipliers", body), 409, "multiplier-exists")
    for bad in ({**body, "multiplier": "0"}, {**body, "multiplier": "NaN"}, {**body, "scope": "x"}):
        assert_problem(api("post", "/v1/program/multipliers", bad), 422, "validation-failed")
    assert_problem(
        api("patch", "/v1/program/multipliers/mul_nope", {"multiplier": 2}),
        404,
        "multiplier-not-found",
    )
    assert_problem(api("delete", "/v1/program/multipliers/mul_nope"), 404, "multiplier-not-found")


def test_earning_settings_errors(api: Callable[..., Any]) -> None:
    assert_problem(
        api("patch", "/v1/program/earning", {"minimum_order_total": 1000}),
        422,
        "validation-failed",
    )
    assert_problem(api("patch", "/v1/program/earning", {"daily_cap": 0}), 422, "validation-failed")
    both = api(
        "patch",
        "/v1/program/earning",
        {"minimum_order_total": 1000, "minimum_order_currency": "eur", "monthly_cap": 5000},
    )
    assert both.json["minimum_order_currency"] == "EUR"
    assert api("get", "/v1/program/earning").json["monthly_cap"] == 5000


def test_preview_errors(api: Callable[..., Any], member_id: str) -> None:
    assert_problem(
        api("post", "/v1/orders/preview", {"member_id": "mem_nope", "total": 1, "currency": "USD"}),
        404,
        "member-not-found",
    )
    assert_problem(
        api("post", "/v1/orders/preview", {"member_id": member_id, "total": -1, "currency": "USD"}),
        422,
        "validation-failed",
    )


def test_scopes(client: FlaskClient, make_headers: Callable[..., Headers]) -> None:
    reader = make_headers("program:read")
    assert client.get("/v1/program/campaigns", headers=reader).status_code == 200
    assert_problem(
        client.post("/v1/program/multipliers", json={}, headers=reader), 403, "insufficient-scope"
    )
    assert_problem(
        client.post(
            "/v1/orders/preview",
            json={"member_id": "m", "total": 1, "currency": "USD"},
            headers=reader,
        ),
        403,
        "insufficient-scope",
    )
    assert_problem(client.get("/v1/audit"), 401, "unauthenticated")
