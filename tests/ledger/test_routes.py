"""The points calls over HTTP: statuses, bodies, errors and Idempotency-Key."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from loyalty.clock import FrozenClock
from tests.test_problems import assert_problem

Headers = dict[str, str]
PAST = "2026-02-20T10:00:00Z"  # 18 days before the test clock: points active at once


@pytest.fixture
def api(client: FlaskClient, headers: Headers, clock: FrozenClock) -> Callable[..., Any]:
    def call(method: str, url: str, body: Any = None, **extra: str) -> Any:
        kwargs: dict[str, Any] = {"headers": {**headers, **extra}}
        if body is not None:
            kwargs["json"] = body
        return getattr(client, method)(url, **kwargs)

    return call


@pytest.fixture
def member_id(api: Callable[..., Any]) -> str:
    response = api("post", "/v1/members", {"external_id": "shopper-1"})
    assert response.status_code == 201
    return str(response.json["id"])


def test_order_refund_balance_and_history(api: Callable[..., Any], member_id: str) -> None:
    body = {
        "order_id": "A-1001",
        "member_id": member_id,
        "total": 12345,
        "currency": "USD",
        "items": [
            {"sku": "tee", "category": "apparel", "quantity": 2, "unit_price": 5000},
            {"sku": "cap", "quantity": 1, "unit_price": 2345},
        ],
    }
    created = api("post", "/v1/orders", body)
    assert created.status_code == 201
    assert created.json == {
        "order_id": "A-1001",
        "member_id": member_id,
        "points": 123,
        "status": "pending",
        "activates_at": "2026-03-24T12:00:00Z",
        "balance": {"available": 0, "pending": 123, "held": 0},
        "breakdown": [{"rule": "base", "kind": "base", "label": "base", "points": 123}],
        "description": "base 123",
    }
    replay = api("post", "/v1/orders", body)
    assert (replay.status_code, replay.json) == (200, created.json)
    conflict = api("post", "/v1/orders", {**body, "total": 1})
    assert_problem(conflict, 409, "order-conflict")

    refund = api(
        "post",
        "/v1/orders/A-1001/refunds",
        {"refund_id": "R-1", "items": [{"sku": "tee", "quantity": 1}]},
    )
    assert refund.status_code == 201
    assert refund.json == {
        "refund_id": "R-1",
        "order_id": "A-1001",
        "points_reversed": 50,
        "shortfall": 0,
        "balance": {"available": 0, "pending": 73, "held": 0},
    }
    again = api(
        "post",
        "/v1/orders/A-1001/refunds",
        {"refund_id": "R-1", "items": [{"sku": "tee", "quantity": 1}]},
    )
    assert (again.status_code, again.json) == (200, refund.json)

    balance = api("get", f"/v1/members/{member_id}/balance")
    assert balance.json == {
        "available": 0,
        "pending": 73,
        "held": 0,
        "lifetime_earned": 73,
        "expiring": [],
    }
    member = api("get", f"/v1/members/{member_id}").json
    assert member["points"] == {"available": 0, "pending": 73, "held": 0, "lifetime_earned": 73}

    ledger = api("get", f"/v1/members/{member_id}/ledger").json
    assert [(e["kind"], e["points"], e["reference"]) for e in ledger["items"]] == [
        ("reversal", -50, {"type": "refund", "id": "R-1"}),
        ("accrual", 123, {"type": "order", "id": "A-1001"}),
    ]
    assert ledger["items"][0]["balance_after"] == {"available": 0, "pending": 73, "held": 0}
    assert ledger["items"][0]["id"].startswith("ent_")
    assert ledger["next_cursor"] is None


def test_hold_capture_release_and_redeem(api: Callable[..., Any], member_id: str) -> None:
    api(
        "post",
        "/v1/orders",
        {
            "order_id": "A",
            "member_id": member_id,
            "total": 20000,
            "currency": "EUR",
            "placed_at": PAST,
        },
    )
    hold = api("post", f"/v1/members/{member_id}/holds", {"points": 80, "reference": "cart-7"})
    assert hold.status_code == 201
    assert hold.json["status"] == "held"
    assert hold.json["expires_at"] == "2026-03-10T12:15:00Z"
    assert hold.json["balance"] == {"available": 120, "pending": 0, "held": 80}
    hold_id = hold.json["id"]

    got = api("get", f"/v1/holds/{hold_id}").json
    assert (got["status"], got["points"], got["reference"]) == ("held", 80, "cart-7")

    captured = api("post", f"/v1/holds/{hold_id}/capture", {"points": 50})
    assert captured.status_code == 200
    assert captured.json["status"] == "captured"
    assert captured.json["points"] == 50
    assert captured.json["redemption_id"].startswith("red_")
    assert captured.json["balance"] == {"available": 150, "pending": 0, "held": 0}
    again = api("post", f"/v1/holds/{hold_id}/capture", {})
    body = assert_problem(again, 409, "hold-not-held")
    assert body["hold_status"] == "captured"
    assert_problem(api("post", f"/v1/holds/{hold_id}/release"), 409, "hold-not-held")

    second = api("post", f"/v1/members/{member_id}/holds", {"points": 10}).json
    released = api("post", f"/v1/holds/{second['id']}/release")
    assert released.status_code == 200
    assert released.json["status"] == "released"
    assert released.json["balance"] == {"available": 150, "pending": 0, "held": 0}

    redeemed = api(
        "post", f"/v1/members/{member_id}/redemptions", {"points": 40, "reference": "r-1"}
    )
    assert redeemed.status_code == 201
    assert redeemed.json["points"] == 40
    assert redeemed.json["balance"] == {"available": 110, "pending": 0, "held": 0}
    short = api("post", f"/v1/members/{member_id}/redemptions", {"points": 111})
    body = assert_problem(short, 409, "insufficient-points")
    assert (body["available"], body["requested"]) == (110, 111)
    too_much = api("post", f"/v1/holds/{second['id']}/capture", {"points": 11})
    assert_problem(too_much, 409, "hold-not-held")


def test_capture_above_the_hold_is_422(api: Callable[..., Any], member_id: str) -> None:
    api(
        "post",
        "/v1/orders",
        {
            "order_id": "A",
            "member_id": member_id,
            "total": 20000,
            "currency": "EUR",
            "placed_at": PAST,
        },
    )
    hold = api("post", f"/v1/members/{member_id}/holds", {"points": 80}).json
    body = assert_problem(
        api("post", f"/v1/holds/{hold['id']}/capture", {"points": 81}), 422, "capture-exceeds-hold"
    )
    assert body["errors"][0]["pointer"] == "#"


def test_timed_out_hold(api: Callable[..., Any], member_id: str, clock: FrozenClock) -> None:
    api(
        "post",
        "/v1/orders",
        {
            "order_id": "A",
            "member_id": member_id,
            "total": 20000,
            "currency": "EUR",
            "placed_at": PAST,
        },
    )
    hold = api("post", f"/v1/members/{member_id}/holds", {"points": 80, "expires_in": 60}).json
    clock.advance(dt.timedelta(seconds=61))
    body = assert_problem(api("post", f"/v1/holds/{hold['id']}/capture"), 409, "hold-not-held")
    assert body["hold_status"] == "expired"
    assert api("get", f"/v1/holds/{hold['id']}").json["status"] == "expired"
    assert api("get", f"/v1/members/{member_id}/balance").json["available"] == 200


def test_adjustments_and_settings(api: Callable[..., Any], member_id: str) -> None:
    credit = api("post", f"/v1/members/{member_id}/adjustments", {"points": 25, "reason": "sorry"})
    assert credit.status_code == 201
    assert credit.json["points"] == 25
    assert credit.json["balance"] == {"available": 25, "pending": 0, "held": 0}
    debit = api("post", f"/v1/members/{member_id}/adjustments", {"points": -26, "reason": "x"})
    assert_problem(debit, 409, "insufficient-points")

    current = api("get", "/v1/program/settings").json
    assert current["earn_rate"] == "1.0000"
    changed = api("patch", "/v1/program/settings", {"pending_days": 0, "earn_rate": "2"})
    assert changed.status_code == 200
    assert (changed.json["pending_days"], changed.json["earn_rate"]) == (0, "2.0000")
    order = api(
        "post",
        "/v1/orders",
        {"order_id": "B", "member_id": member_id, "total": 1000, "currency": "USD"},
    )
    assert (order.json["points"], order.json["status"]) == (20, "active")


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"points": 0, "reason": "x"}, "#/points"),
        ({"points": 5}, "#/reason"),
        ({"points": 5, "reason": "  "}, "#/reason"),
        ({"points": 1.5, "reason": "x"}, "#/points"),
        ({"points": "5", "reason": "x"}, "#/points"),
        ({"points": 10**13, "reason": "x"}, "#/points"),
    ],
)
def test_adjustment_validation(
    api: Callable[..., Any], member_id: str, body: dict[str, Any], pointer: str
) -> None:
    response = api("post", f"/v1/members/{member_id}/adjustments", body)
    problem = assert_problem(response, 422, "validation-failed")
    assert {e["pointer"] for e in problem["errors"]} == {pointer}


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        ({"total": -1}, "#/total"),
        ({"total": 10**16}, "#/total"),
        ({"total": "100"}, "#/total"),
        ({"currency": "US"}, "#/currency"),
        ({"currency": "XAU"}, "#/currency"),
        ({"currency": "ZZZ"}, "#/currency"),
        ({"order_id": ""}, "#/order_id"),
        ({"order_id": "x" * 129}, "#/order_id"),
        ({"items": [{"sku": "a", "quantity": 0, "unit_price": 1}]}, "#/items/0/quantity"),
        ({"items": [{"sku": "a", "quantity": 1}]}, "#/items/0/unit_price"),
        (
            {
                "items": [
                    {"sku": "a", "quantity": 1, "unit_price": 1},
                    {"sku": "a", "quantity": 1, "unit_price": 1},
                ]
            },
            "#/items",
        ),
        ({"member_id": None}, "#/member_id"),
    ],
)
def test_order_validation(
    api: Callable[..., Any], member_id: str, change: dict[str, Any], pointer: str
) -> None:
    body = {"order_id": "A", "member_id": member_id, "total": 100, "currency": "USD", **change}
    problem = assert_problem(api("post", "/v1/orders", body), 422, "validation-failed")
    assert {e["pointer"] for e in problem["errors"]} == {pointer}


@pytest.mark.parametrize(
    ("placed_at", "code"),
    [
        ("2030-01-01T00:00:00Z", "order-in-future"),
        ("2026-03-10T12:06:00Z", "order-in-future"),  # 6 minutes ahead of the clock
        ("2026-02-07T12:00:00Z", "order-too-old"),  # 31 days ago: history goes via the import
        ("1970-01-01T00:00:00Z", "order-too-old"),
    ],
)
def test_orders_from_the_far_past_or_the_future_are_refused(
    api: Callable[..., Any], member_id: str, placed_at: str, code: str
) -> None:
    body = {"order_id": "A", "member_id": member_id, "total": 100, "currency": "USD"}
    problem = assert_problem(api("post", "/v1/orders", {**body, "placed_at": placed_at}), 422, code)
    assert [e["pointer"] for e in problem["errors"]] == ["#/placed_at"]
    # Within the bounds (30 days back, 5 minutes ahead) they are recorded.
    assert (
        api("post", "/v1/orders", {**body, "placed_at": "2026-02-08T12:00:01Z"}).status_code == 201
    )
    body["order_id"] = "B"
    assert (
        api("post", "/v1/orders", {**body, "placed_at": "2026-03-10T12:04:00Z"}).status_code == 201
    )


def test_order_for_unknown_or_inactive_members(api: Callable[..., Any], member_id: str) -> None:
    body = {"order_id": "A", "member_id": "mem_nobody", "total": 100, "currency": "USD"}
    assert_problem(api("post", "/v1/orders", body), 404, "member-not-found")
    api("patch", f"/v1/members/{member_id}", {"status": "suspended"})
    body["member_id"] = member_id
    problem = assert_problem(api("post", "/v1/orders", body), 409, "member-not-active")
    assert problem["member_status"] == "suspended"


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"refund_id": "R"}, "#/amount"),
        ({"refund_id": "R", "amount": 1, "items": [{"sku": "a", "quantity": 1}]}, "#/amount"),
        ({"refund_id": "R", "amount": 0}, "#/amount"),
        ({"refund_id": "R", "items": []}, "#/items"),
        ({"amount": 5}, "#/refund_id"),
    ],
)
def test_refund_validation(
    api: Callable[..., Any], member_id: str, body: dict[str, Any], pointer: str
) -> None:
    api(
        "post",
        "/v1/orders",
        {"order_id": "A", "member_id": member_id, "total": 100, "currency": "USD"},
    )
    problem = assert_problem(api("post", "/v1/orders/A/refunds", body), 422, "validation-failed")
    assert {e["pointer"] for e in problem["errors"]} == {pointer}


def test_refund_errors(api: Callable[..., Any], member_id: str) -> None:
    assert_problem(
        api("post", "/v1/orders/nope/refunds", {"refund_id": "R", "amount": 1}),
        404,
        "order-not-found",
    )
    api(
        "post",
        "/v1/orders",
        {"order_id": "A", "member_id": member_id, "total": 100, "currency": "USD"},
    )
    body = assert_problem(
        api("post", "/v1/orders/A/refunds", {"refund_id": "R", "amount": 101}),
        422,
        "refund-exceeds-order",
    )
    assert body["refundable_amount"] == 100
    api("post", "/v1/orders/A/refunds", {"refund_id": "R2", "amount": 40})
    assert_problem(
        api("post", "/v1/orders/A/refunds", {"refund_id": "R2", "amount": 41}),
        409,
        "refund-conflict",
    )


def test_a_refund_that_reverses_no_points_has_a_zero_shortfall(
    api: Callable[..., Any], member_id: str
) -> None:
    order = {"order_id": "A", "member_id": member_id, "total": 10_000, "currency": "USD"}
    assert api("post", "/v1/orders", order).status_code == 201
    # 1 cent of a 100-dollar order reverses no points: the shortfall is 0, not null.
    response = api("post", "/v1/orders/A/refunds", {"refund_id": "R", "amount": 1})
    assert response.status_code == 201
    assert (response.json["points_reversed"], response.json["shortfall"]) == (0, 0)
    replay = api("post", "/v1/orders/A/refunds", {"refund_id": "R", "amount": 1})
    assert (replay.status_code, replay.json["shortfall"]) == (200, 0)


def test_not_found(api: Callable[..., Any]) -> None:
    assert_problem(api("get", "/v1/holds/hld_x"), 404, "hold-not-found")
    assert_problem(api("post", "/v1/holds/hld_x/capture", {}), 404, "hold-not-found")
    assert_problem(api("post", "/v1/holds/hld_x/release"), 404, "hold-not-found")
    for path in ("balance", "ledger"):
        assert_problem(api("get", f"/v1/members/mem_x/{path}"), 404, "member-not-found")
    assert_problem(
        api("post", "/v1/members/mem_x/redemptions", {"points": 1}), 404, "member-not-found"
    )


def test_ledger_pages(api: Callable[..., Any], member_id: str) -> None:
    for i in range(5):
        api("post", f"/v1/members/{member_id}/adjustments", {"points": i + 1, "reason": "r"})
    first = api("get", f"/v1/members/{member_id}/ledger?limit=3").json
    second = api(
        "get", f"/v1/members/{member_id}/ledger?limit=3&cursor={first['next_cursor']}"
    ).json
    assert [e["points"] for e in first["items"] + second["items"]] == [5, 4, 3, 2, 1]
    assert second["next_cursor"] is None
    bad = api("get", f"/v1/members/{member_id}/ledger?cursor=abc")
    assert_problem(bad, 422, "validation-failed")
    import base64

    huge = base64.urlsafe_b64encode(b'{"after":"99999999999999999999"}').decode().rstrip("=")
    assert_problem(
        api("get", f"/v1/members/{member_id}/ledger?cursor={huge}"), 422, "validation-failed"
    )


# --- Idempotency-Key --------------------------------------------------------------------------


def test_same_key_same_request_replays_byte_for_byte(
    api: Callable[..., Any], member_id: str
) -> None:
    api("post", f"/v1/members/{member_id}/adjustments", {"points": 100, "reason": "seed"})
    first = api(
        "post", f"/v1/members/{member_id}/redemptions", {"points": 30}, **{"Idempotency-Key": "k-1"}
    )
    again = api(
        "post", f"/v1/members/{member_id}/redemptions", {"points": 30}, **{"Idempotency-Key": "k-1"}
    )
    assert first.status_code == again.status_code == 201
    assert again.data == first.data
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert api("get", f"/v1/members/{member_id}/balance").json["available"] == 70


def test_business_rejections_are_replayed_too(api: Callable[..., Any], member_id: str) -> None:
    first = api(
        "post", f"/v1/members/{member_id}/redemptions", {"points": 30}, **{"Idempotency-Key": "k-2"}
    )
    assert_problem(first, 409, "insufficient-points")
    api("post", f"/v1/members/{member_id}/adjustments", {"points": 100, "reason": "seed"})
    again = api(
        "post", f"/v1/members/{member_id}/redemptions", {"points": 30}, **{"Idempotency-Key": "k-2"}
    )
    assert again.status_code == 409
    assert again.data == first.data
    assert api("get", f"/v1/members/{member_id}/balance").json["available"] == 100


def test_same_key_other_request_is_422(api: Callable[..., Any], member_id: str) -> None:
    api("post", f"/v1/members/{member_id}/adjustments", {"points": 100, "reason": "seed"})
    api(
        "post", f"/v1/members/{member_id}/redemptions", {"points": 30}, **{"Idempotency-Key": "k-3"}
    )
    other = api(
        "post", f"/v1/members/{member_id}/redemptions", {"points": 31}, **{"Idempotency-Key": "k-3"}
    )
    assert_problem(other, 422, "idempotency-key-reused")
    elsewhere = api(
        "post", f"/v1/members/{member_id}/holds", {"points": 30}, **{"Idempotency-Key": "k-3"}
    )
    assert_problem(elsewhere, 422, "idempotency-key-reused")
    assert api("get", f"/v1/members/{member_id}/balance").json["available"] == 70


def test_validation_failures_are_not_stored(api: Callable[..., Any], member_id: str) -> None:
    api("post", f"/v1/members/{member_id}/adjustments", {"points": 100, "reason": "seed"})
    bad = api(
        "post", f"/v1/members/{member_id}/redemptions", {"points": -1}, **{"Idempotency-Key": "k-4"}
    )
    assert bad.status_code == 422
    good = api(
        "post", f"/v1/members/{member_id}/redemptions", {"points": 1}, **{"Idempotency-Key": "k-4"}
    )
    assert good.status_code == 201


def test_keys_are_scoped_to_the_client(
    client: FlaskClient, make_headers: Callable[..., Headers], clock: FrozenClock
) -> None:
    a, b = make_headers(), make_headers()
    member = client.post("/v1/members", json={"external_id": "x"}, headers=a).json
    client.post(
        f"/v1/members/{member['id']}/adjustments", json={"points": 10, "reason": "s"}, headers=a
    )
    url = f"/v1/members/{member['id']}/redemptions"
    assert (
        client.post(url, json={"points": 1}, headers={**a, "Idempotency-Key": "same"}).status_code
        == 201
    )
    assert (
        client.post(url, json={"points": 1}, headers={**b, "Idempotency-Key": "same"}).status_code
        == 201
    )
    assert client.get(f"/v1/members/{member['id']}/balance", headers=a).json["available"] == 8


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there"])
def test_invalid_keys(api: Callable[..., Any], member_id: str, key: str) -> None:
    response = api(
        "post", f"/v1/members/{member_id}/redemptions", {"points": 1}, **{"Idempotency-Key": key}
    )
    assert_problem(response, 422, "invalid-idempotency-key")


def test_every_state_changing_post_accepts_a_key(api: Callable[..., Any], member_id: str) -> None:
    key = {"Idempotency-Key": "k-all"}
    order = {
        "order_id": "A",
        "member_id": member_id,
        "total": 10000,
        "currency": "USD",
        "placed_at": PAST,
    }
    for _ in range(2):
        assert api("post", "/v1/orders", order, **key).status_code == 201
    hold = api(
        "post", f"/v1/members/{member_id}/holds", {"points": 10}, **{"Idempotency-Key": "h"}
    ).json
    for _ in range(2):
        response = api(
            "post", f"/v1/holds/{hold['id']}/release", None, **{"Idempotency-Key": "rel"}
        )
        assert response.status_code == 200
    for _ in range(2):
        response = api(
            "post", "/v1/members", {"external_id": "new"}, **{"Idempotency-Key": "enrol"}
        )
        assert response.status_code == 201
    assert api("get", f"/v1/members/{member_id}/balance").json["available"] == 100


def test_reads_show_holds_and_balances_as_of_now(
    api: Callable[..., Any], member_id: str, clock: FrozenClock
) -> None:
    """A hold whose time ran out reads as expired, and the member object's points agree with
    the balance call, before the job has run."""
    order = {"order_id": "now-1", "member_id": member_id, "total": 10000, "currency": "USD"}
    assert api("post", "/v1/orders", {**order, "placed_at": PAST}).status_code == 201
    assert api("post", "/v1/orders", {**order, "order_id": "now-2"}).status_code == 201
    hold = api("post", f"/v1/members/{member_id}/holds", {"points": 60, "expires_in": 60})
    assert hold.status_code == 201
    clock.advance(dt.timedelta(days=15))

    read = api("get", f"/v1/holds/{hold.json['id']}")
    assert read.status_code == 200
    assert read.json["status"] == "expired"
    balance = api("get", f"/v1/members/{member_id}/balance").json
    member = api("get", f"/v1/members/{member_id}").json
    listed = api("get", "/v1/members?external_id=shopper-1").json["items"][0]
    assert (balance["available"], balance["pending"], balance["held"]) == (200, 0, 0)
    for shown in (member["points"], listed["points"]):
        assert (shown["available"], shown["pending"], shown["held"]) == (200, 0, 0)
