"""Every state-changing call honours Idempotency-Key: the route table says which calls are
wrapped and declare the header, each one replays and refuses a reused key, and PATCH, DELETE
and business rejections replay as they were stored."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Connection, func, select

from loyalty.clock import FrozenClock, use_clock
from loyalty.db import Base
from loyalty.idempotency import honours_idempotency_key
from tests.billing.conftest import SECRET_KEY, WEBHOOK_SECRET
from tests.billing.conftest import fake_stripe as fake_stripe  # started when a test asks
from tests.conftest import bearer_headers
from tests.support import START, _invariants_hold, clock  # noqa: F401 - fixtures by name
from tests.test_problems import assert_problem

Headers = dict[str, str]
Api = Callable[..., Any]
KEY = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
# Every test runs on the frozen test clock, and the ledger's invariants are checked after it.
pytestmark = pytest.mark.usefixtures("clock")
CAMPAIGN = {
    "name": "Double Points Week",
    "starts_at": "2026-03-01T00:00:00Z",
    "ends_at": "2026-04-01T00:00:00Z",
    "multiplier": 2,
}


@pytest.fixture
def api(client: FlaskClient, headers: Headers) -> Api:
    def call(method: str, url: str, body: Any = None, **extra: str) -> Any:
        kwargs: dict[str, Any] = {"headers": {**headers, **extra}}
        if body is not None:
            kwargs["json"] = body
        return getattr(client, method)(url, **kwargs)

    return call


def test_two_campaign_posts_with_one_key_create_one_campaign(api: Api) -> None:
    first = api("post", "/v1/program/campaigns", CAMPAIGN, **{KEY: "campaign-1"})
    again = api("post", "/v1/program/campaigns", CAMPAIGN, **{KEY: "campaign-1"})
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.data == first.data
    assert again.headers.get(REPLAYED) == "true"
    assert REPLAYED not in first.headers
    listed = api("get", "/v1/program/campaigns").json["items"]
    assert [c["id"] for c in listed] == [first.json["id"]]
    other = api("post", "/v1/program/campaigns", {**CAMPAIGN, "name": "x"}, **{KEY: "campaign-1"})
    assert_problem(other, 422, "idempotency-key-reused")


# --- PATCH, DELETE and business rejections ---------------------------------------------------


def new_campaign(api: Api) -> str:
    created = api("post", "/v1/program/campaigns", CAMPAIGN)
    assert created.status_code == 201, created.json
    return str(created.json["id"])


def test_a_patch_replay_returns_the_stored_body_though_the_object_changed(api: Api) -> None:
    campaign_id = new_campaign(api)
    url = f"/v1/program/campaigns/{campaign_id}"
    first = api("patch", url, {"name": "Spring"}, **{KEY: "rename-1"})
    assert (first.status_code, first.json["name"]) == (200, "Spring")
    assert api("patch", url, {"name": "Summer"}).json["name"] == "Summer"
    again = api("patch", url, {"name": "Spring"}, **{KEY: "rename-1"})
    assert (again.status_code, again.data) == (200, first.data)
    assert again.headers.get(REPLAYED) == "true"
    assert api("get", url).json["name"] == "Summer"
    audit = api("get", f"/v1/audit?entity_type=campaign&entity_id={campaign_id}")
    assert [r["action"] for r in audit.json["items"]] == ["updated", "updated", "created"]


def test_a_delete_replay_returns_the_stored_204_not_a_404(api: Api) -> None:
    url = f"/v1/program/campaigns/{new_campaign(api)}"
    first = api("delete", url, **{KEY: "remove-1"})
    assert (first.status_code, first.data) == (204, b"")
    again = api("delete", url, **{KEY: "remove-1"})
    assert (again.status_code, again.data) == (204, b"")
    assert again.headers.get(REPLAYED) == "true"
    assert_problem(api("delete", url), 404, "campaign-not-found")
    assert_problem(api("delete", url, **{KEY: "remove-2"}), 404, "campaign-not-found")


def test_a_managers_business_rejection_is_stored_and_replayed(api: Api) -> None:
    tier = {"code": "gold", "name": "Gold", "rank": 1, "threshold": 1000}
    assert api("post", "/v1/program/tiers", tier).status_code == 201
    member_id = api("post", "/v1/members", {"external_id": "vip"}).json["id"]
    assign = {"tier": "gold", "reason": "VIP"}
    assert api("post", f"/v1/members/{member_id}/tier", assign).status_code == 200
    first = api("delete", "/v1/program/tiers/gold", **{KEY: "drop-gold"})
    assert_problem(first, 409, "tier-in-use")
    assert api("delete", f"/v1/members/{member_id}/tier").status_code == 200
    again = api("delete", "/v1/program/tiers/gold", **{KEY: "drop-gold"})
    assert (again.status_code, again.data) == (409, first.data)
    assert again.headers.get(REPLAYED) == "true"
    assert api("get", "/v1/program/tiers/gold").status_code == 200
    assert api("delete", "/v1/program/tiers/gold", **{KEY: "drop-gold-2"}).status_code == 204


# --- every operation, from the route table ---------------------------------------------------

STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")
# Not state-changing, and no API client exists before it runs to scope a key to.
# The token endpoint; Stripe's webhook, which is keyed by Stripe's event id instead.
EXCLUDED = {("POST", "/v1/auth/token"), ("POST", "/v1/billing/stripe/webhook")}
PAST = "2026-02-20T10:00:00Z"  # 18 days before the test clock: points active at once
WHEN = "2026-03-10T11:00:00Z"


@dataclass(frozen=True)
class Call:
    url: str
    body: dict[str, Any] | None = None


def created(api: Api, url: str, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    response = api("post", url, body)
    assert response.status_code == status, response.json
    return dict(response.json)


def member(api: Api, **values: Any) -> dict[str, Any]:
    return created(api, "/v1/members", {"external_id": f"idem-{uuid.uuid4().hex}", **values})


def rich_member(api: Api) -> str:
    member_id = str(member(api)["id"])
    created(api, f"/v1/members/{member_id}/adjustments", {"points": 1000, "reason": "seed"})
    return member_id


def order(api: Api) -> str:
    body = {
        "order_id": "A-1",
        "member_id": member(api)["id"],
        "total": 10000,
        "currency": "USD",
        "placed_at": PAST,
    }
    return str(created(api, "/v1/orders", body)["order_id"])


def hold(api: Api) -> str:
    return str(created(api, f"/v1/members/{rich_member(api)}/holds", {"points": 10})["id"])


def reward(api: Api) -> str:
    body = {"kind": "custom", "name": "Tote", "points_cost": 100}
    return str(created(api, "/v1/program/rewards", body)["id"])


def claim(api: Api) -> str:
    url = f"/v1/members/{rich_member(api)}/rewards/{reward(api)}/claims"
    return str(created(api, url, {})["id"])


def tier(api: Api) -> str:
    body = {"code": "gold", "name": "Gold", "rank": 1, "threshold": 1000}
    return str(created(api, "/v1/program/tiers", body)["code"])


def manual_tier(api: Api) -> str:
    member_id = str(member(api)["id"])
    created(api, f"/v1/members/{member_id}/tier", {"tier": tier(api), "reason": "VIP"}, 200)
    return member_id


def event_type(api: Api, name: str = "review.posted") -> str:
    return str(created(api, "/v1/program/event-types", {"name": name})["name"])


def event_rule(api: Api, name: str = "review.posted") -> str:
    body = {"event_type": event_type(api, name), "points": 10}
    return str(created(api, "/v1/program/event-rules", body)["id"])


def badge(api: Api) -> str:
    body = {
        "name": "Reviewer",
        "rule": "event_count",
        "event_type": event_type(api),
        "levels": [{"name": "bronze", "threshold": 1}],
    }
    return str(created(api, "/v1/program/badges", body)["id"])


def multiplier(api: Api) -> str:
    body = {"scope": "category", "match": "shoes", "multiplier": "2"}
    return str(created(api, "/v1/program/multipliers", body)["id"])


def perk(api: Api) -> str:
    body = {"kind": "free_shipping", "name": "Free shipping"}
    return str(created(api, "/v1/program/perks", body)["id"])


def checking_in_member(api: Api) -> str:
    """A member, in a programme where a check-in earns points."""
    event_rule(api, "check_in")
    return str(member(api)["id"])


def referral_under_review(api: Api) -> str:
    """A referral held for review: the referrer's second invitation within the velocity
    limit of one a day."""
    assert api("patch", "/v1/program/referrals", {"velocity_limit": 1}).status_code == 200
    code = member(api)["referral_code"]
    member(api, referral_code=code)
    member(api, referral_code=code)
    [held] = api("get", "/v1/program/referrals/reviews").json["items"]
    return str(held["id"])


def webhook_endpoint(api: Api) -> str:
    body = {"url": "https://hooks.example.com/loyalty", "event_types": ["*"]}
    return str(created(api, "/v1/webhooks/endpoints", body)["id"])


# (method, Flask rule) -> a successful request of that operation, with what it needs set up.
CALLS: dict[tuple[str, str], Callable[[Api], Call]] = {
    ("POST", "/v1/members"): lambda api: Call("/v1/members", {"external_id": "new"}),
    ("PATCH", "/v1/members/<string:member_id>"): lambda api: Call(
        f"/v1/members/{member(api)['id']}", {"name": "Ada"}
    ),
    ("POST", "/v1/orders"): lambda api: Call(
        "/v1/orders",
        {"order_id": "A-9", "member_id": member(api)["id"], "total": 5000, "currency": "USD"},
    ),
    ("POST", "/v1/orders/<string:order_id>/refunds"): lambda api: Call(
        f"/v1/orders/{order(api)}/refunds", {"refund_id": "R-1", "amount": 5000}
    ),
    ("POST", "/v1/orders/preview"): lambda api: Call(
        "/v1/orders/preview", {"member_id": member(api)["id"], "total": 5000, "currency": "USD"}
    ),
    ("POST", "/v1/members/<string:member_id>/adjustments"): lambda api: Call(
        f"/v1/members/{member(api)['id']}/adjustments", {"points": 10, "reason": "goodwill"}
    ),
    ("POST", "/v1/members/<string:member_id>/redemptions"): lambda api: Call(
        f"/v1/members/{rich_member(api)}/redemptions", {"points": 10}
    ),
    ("POST", "/v1/members/<string:member_id>/holds"): lambda api: Call(
        f"/v1/members/{rich_member(api)}/holds", {"points": 10}
    ),
    ("POST", "/v1/holds/<string:hold_id>/capture"): lambda api: Call(
        f"/v1/holds/{hold(api)}/capture", {"points": 5}
    ),
    ("POST", "/v1/holds/<string:hold_id>/release"): lambda api: Call(
        f"/v1/holds/{hold(api)}/release"
    ),
    ("PATCH", "/v1/program/settings"): lambda api: Call(
        "/v1/program/settings", {"pending_days": 7}
    ),
    ("PATCH", "/v1/program/analytics"): lambda api: Call(
        "/v1/program/analytics", {"risk_drop_pct": 40}
    ),
    ("POST", "/v1/analytics/tier-what-if"): lambda api: Call("/v1/analytics/tier-what-if", {}),
    ("PATCH", "/v1/program/earning"): lambda api: Call(
        "/v1/program/earning", {"excluded_categories": ["gift-cards"]}
    ),
    ("POST", "/v1/program/multipliers"): lambda api: Call(
        "/v1/program/multipliers", {"scope": "sku", "match": "boot", "multiplier": "3"}
    ),
    ("PATCH", "/v1/program/multipliers/<string:multiplier_id>"): lambda api: Call(
        f"/v1/program/multipliers/{multiplier(api)}", {"multiplier": "3"}
    ),
    ("DELETE", "/v1/program/multipliers/<string:multiplier_id>"): lambda api: Call(
        f"/v1/program/multipliers/{multiplier(api)}"
    ),
    ("POST", "/v1/program/campaigns"): lambda api: Call("/v1/program/campaigns", CAMPAIGN),
    ("PATCH", "/v1/program/campaigns/<string:campaign_id>"): lambda api: Call(
        f"/v1/program/campaigns/{new_campaign(api)}", {"name": "Renamed"}
    ),
    ("DELETE", "/v1/program/campaigns/<string:campaign_id>"): lambda api: Call(
        f"/v1/program/campaigns/{new_campaign(api)}"
    ),
    ("PATCH", "/v1/program/tier-policy"): lambda api: Call(
        "/v1/program/tier-policy", {"grace_days": 30}
    ),
    ("POST", "/v1/program/tiers"): lambda api: Call(
        "/v1/program/tiers", {"code": "silver", "name": "Silver", "rank": 2, "threshold": 500}
    ),
    ("PATCH", "/v1/program/tiers/<string:code>"): lambda api: Call(
        f"/v1/program/tiers/{tier(api)}", {"name": "Golden"}
    ),
    ("DELETE", "/v1/program/tiers/<string:code>"): lambda api: Call(
        f"/v1/program/tiers/{tier(api)}"
    ),
    ("POST", "/v1/members/<string:member_id>/tier"): lambda api: Call(
        f"/v1/members/{member(api)['id']}/tier", {"tier": tier(api), "reason": "VIP"}
    ),
    ("DELETE", "/v1/members/<string:member_id>/tier"): lambda api: Call(
        f"/v1/members/{manual_tier(api)}/tier"
    ),
    ("POST", "/v1/program/rewards"): lambda api: Call(
        "/v1/program/rewards", {"kind": "custom", "name": "Mug", "points_cost": 50}
    ),
    ("PATCH", "/v1/program/rewards/<string:reward_id>"): lambda api: Call(
        f"/v1/program/rewards/{reward(api)}", {"name": "Bag"}
    ),
    ("DELETE", "/v1/program/rewards/<string:reward_id>"): lambda api: Call(
        f"/v1/program/rewards/{reward(api)}"
    ),
    ("POST", "/v1/program/perks"): lambda api: Call(
        "/v1/program/perks", {"kind": "birthday_gift", "name": "Birthday", "bonus_points": 50}
    ),
    ("PATCH", "/v1/program/perks/<string:perk_id>"): lambda api: Call(
        f"/v1/program/perks/{perk(api)}", {"name": "Faster shipping"}
    ),
    ("DELETE", "/v1/program/perks/<string:perk_id>"): lambda api: Call(
        f"/v1/program/perks/{perk(api)}"
    ),
    ("POST", "/v1/members/<string:member_id>/rewards/<string:reward_id>/claims"): lambda api: Call(
        f"/v1/members/{rich_member(api)}/rewards/{reward(api)}/claims", {}
    ),
    ("POST", "/v1/claims/<string:claim_id>/use"): lambda api: Call(f"/v1/claims/{claim(api)}/use"),
    ("POST", "/v1/claims/<string:claim_id>/cancel"): lambda api: Call(
        f"/v1/claims/{claim(api)}/cancel"
    ),
    ("PATCH", "/v1/program/referrals"): lambda api: Call(
        "/v1/program/referrals", {"referrer_points": 100}
    ),
    ("POST", "/v1/program/referrals/<string:referral_id>/approve"): lambda api: Call(
        f"/v1/program/referrals/{referral_under_review(api)}/approve", {"reason": "Known"}
    ),
    ("POST", "/v1/program/referrals/<string:referral_id>/reject"): lambda api: Call(
        f"/v1/program/referrals/{referral_under_review(api)}/reject", {"reason": "Fraud"}
    ),
    ("PATCH", "/v1/program/community-settings"): lambda api: Call(
        "/v1/program/community-settings", {"streak_grace_days": 2}
    ),
    ("POST", "/v1/program/event-types"): lambda api: Call(
        "/v1/program/event-types", {"name": "store.visited"}
    ),
    ("PATCH", "/v1/program/event-types/<string:name>"): lambda api: Call(
        f"/v1/program/event-types/{event_type(api)}", {"description": "A review"}
    ),
    ("DELETE", "/v1/program/event-types/<string:name>"): lambda api: Call(
        f"/v1/program/event-types/{event_type(api)}"
    ),
    ("POST", "/v1/program/event-rules"): lambda api: Call(
        "/v1/program/event-rules", {"event_type": event_type(api), "points": 5}
    ),
    ("PATCH", "/v1/program/event-rules/<string:rule_id>"): lambda api: Call(
        f"/v1/program/event-rules/{event_rule(api)}", {"points": 5}
    ),
    ("DELETE", "/v1/program/event-rules/<string:rule_id>"): lambda api: Call(
        f"/v1/program/event-rules/{event_rule(api)}"
    ),
    ("POST", "/v1/program/badges"): lambda api: Call(
        "/v1/program/badges",
        {
            "name": "Big spender",
            "rule": "spend",
            "levels": [{"name": "gold", "threshold": 100000}],
        },
    ),
    ("PATCH", "/v1/program/badges/<string:badge_id>"): lambda api: Call(
        f"/v1/program/badges/{badge(api)}", {"name": "Critic"}
    ),
    ("DELETE", "/v1/program/badges/<string:badge_id>"): lambda api: Call(
        f"/v1/program/badges/{badge(api)}"
    ),
    ("POST", "/v1/events"): lambda api: Call(
        "/v1/events",
        {
            "event_id": "ev-1",
            "member_id": member(api)["id"],
            "type": event_type(api),
            "occurred_at": WHEN,
        },
    ),
    ("POST", "/v1/members/<string:member_id>/check-ins"): lambda api: Call(
        f"/v1/members/{checking_in_member(api)}/check-ins", {}
    ),
    ("PUT", "/v1/members/<string:member_id>/leaderboard-profile"): lambda api: Call(
        f"/v1/members/{member(api)['id']}/leaderboard-profile",
        {"opted_in": True, "display_name": "Zoe"},
    ),
    # A created endpoint's answer shows its secret: it is stored sealed, replayed as it was.
    ("POST", "/v1/webhooks/endpoints"): lambda api: Call(
        "/v1/webhooks/endpoints", {"url": "https://hooks.example.com/new", "event_types": ["*"]}
    ),
    ("PATCH", "/v1/webhooks/endpoints/<string:endpoint_id>"): lambda api: Call(
        f"/v1/webhooks/endpoints/{webhook_endpoint(api)}", {"description": "orders"}
    ),
    ("DELETE", "/v1/webhooks/endpoints/<string:endpoint_id>"): lambda api: Call(
        f"/v1/webhooks/endpoints/{webhook_endpoint(api)}"
    ),
    ("POST", "/v1/webhooks/endpoints/<string:endpoint_id>/rotate-secret"): lambda api: Call(
        f"/v1/webhooks/endpoints/{webhook_endpoint(api)}/rotate-secret", {}
    ),
    ("POST", "/v1/webhooks/endpoints/<string:endpoint_id>/replay"): lambda api: Call(
        f"/v1/webhooks/endpoints/{webhook_endpoint(api)}/replay",
        {"since": "2026-01-01T00:00:00Z"},
    ),
    ("PATCH", "/v1/webhooks/lifecycle"): lambda api: Call(
        "/v1/webhooks/lifecycle", {"inactive_days": 60}
    ),
    # Stripe billing (on against the fake Stripe for these, see `billing_for_stripe_calls`).
    ("PUT", "/v1/members/<string:member_id>/stripe-customer"): lambda api: Call(
        f"/v1/members/{member(api)['id']}/stripe-customer", {"customer_id": "cus_idem1"}
    ),
    ("DELETE", "/v1/members/<string:member_id>/stripe-customer"): lambda api: Call(
        f"/v1/members/{linked_member(api)}/stripe-customer"
    ),
    ("POST", "/v1/members/<string:member_id>/tier/checkout"): lambda api: Call(
        f"/v1/members/{member(api)['id']}/tier/checkout", {"tier": paid_tier(api)}
    ),
}
STRIPE_CALLS = {rule for _, rule in CALLS if "stripe" in rule or "checkout" in rule}


def linked_member(api: Api) -> str:
    member_id = str(member(api)["id"])
    response = api("put", f"/v1/members/{member_id}/stripe-customer", {"customer_id": "cus_idem2"})
    assert response.status_code == 201, response.json
    return member_id


def paid_tier(api: Api) -> str:
    created(
        api,
        "/v1/program/tiers",
        {"code": "paid", "name": "Paid", "rank": 9, "threshold": 0, "stripe_price_id": "price_1"},
    )
    return "paid"


@pytest.fixture
def billing_for_stripe_calls(request: pytest.FixtureRequest, app: Flask) -> Iterator[None]:
    """Billing on, against the fake Stripe, for the billing calls' samples."""
    if request.node.callspec.params.get("rule") not in STRIPE_CALLS:
        yield
        return
    fake = request.getfixturevalue("fake_stripe")
    settings = {
        "STRIPE_SECRET_KEY": SECRET_KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_API_BASE": fake.url,
        "STRIPE_SUCCESS_URL": "https://shop.example/thanks",
        "STRIPE_CANCEL_URL": "https://shop.example/cart",
    }
    before = {key: app.config.get(key) for key in settings}
    app.config.update(settings)
    try:
        yield
    finally:
        app.config.update(before)


def spec_path(rule: str) -> str:
    """The OpenAPI path of a Flask rule: ``<string:member_id>`` -> ``{member_id}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def state_changing_operations(app: Flask) -> list[tuple[str, str, Callable[..., Any]]]:
    """Every state-changing (method, rule, view function) in the app's route table."""
    found = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        view_class = getattr(view, "view_class", None)
        for method in sorted(set(STATE_CHANGING) & (rule.methods or set())):
            handler = getattr(view_class, method.lower()) if view_class is not None else view
            found.append((method, rule.rule, handler))
    return found


def test_every_state_changing_operation_is_wrapped_and_declares_the_header(
    base_app: Flask, client: FlaskClient
) -> None:
    spec = client.get("/v1/openapi.json").json
    checked = set()
    for method, rule, view in state_changing_operations(base_app):
        where = f"{method} {rule}"
        operation = spec["paths"][spec_path(rule)][method.lower()]
        declared = [p for p in operation.get("parameters", []) if p["in"] == "header"]
        if (method, rule) in EXCLUDED:
            assert not honours_idempotency_key(view), where
            assert declared == [], where
            continue
        assert honours_idempotency_key(view), where
        assert [p["name"] for p in declared] == [KEY], where
        assert declared[0]["required"] is False, where
        assert {"409", "422"} <= set(operation["responses"]), where
        checked.add((method, rule))
    assert checked == set(CALLS), "give every new state-changing operation a sample in CALLS"


def test_reads_do_not_declare_the_header(client: FlaskClient) -> None:
    spec = client.get("/v1/openapi.json").json
    for path, item in spec["paths"].items():
        for method in ("get", "head"):
            parameters = item.get(method, {}).get("parameters", [])
            assert KEY not in [p["name"] for p in parameters], f"{method.upper()} {path}"


def row_counts(connection: Connection) -> dict[str, int]:
    """How many rows each table holds: a second effect would add or remove some."""
    return {
        table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
        for table in Base.metadata.sorted_tables
    }


@pytest.mark.parametrize(("method", "rule"), sorted(CALLS), ids=str)
def test_each_operation_replays_its_response_and_refuses_a_reused_key(
    api: Api, connection: Connection, method: str, rule: str, billing_for_stripe_calls: None
) -> None:
    call = CALLS[(method, rule)](api)
    first = api(method.lower(), call.url, call.body, **{KEY: "retry-me"})
    assert 200 <= first.status_code < 300, first.data
    assert REPLAYED not in first.headers
    before = row_counts(connection)
    again = api(method.lower(), call.url, call.body, **{KEY: "retry-me"})
    assert (again.status_code, again.data) == (first.status_code, first.data)
    assert again.headers.get(REPLAYED) == "true"
    assert again.content_type == first.content_type
    other = api(method.lower(), call.url, {**(call.body or {}), "other": 1}, **{KEY: "retry-me"})
    assert_problem(other, 422, "idempotency-key-reused")
    assert row_counts(connection) == before


def test_managers_calls_replay_on_sqlite_too(sqlite_app: Flask) -> None:
    use_clock(sqlite_app, FrozenClock(START))
    client = sqlite_app.test_client()
    headers = bearer_headers(sqlite_app, ["program:read", "program:write"])

    def twice(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        responses = [
            getattr(client, method)(url, json=body, headers={**headers, KEY: f"{method}-1"})
            for _ in range(2)
        ]
        first, again = responses
        assert (again.status_code, again.data) == (first.status_code, first.data)
        assert again.headers.get(REPLAYED) == "true"
        return first

    created = twice("post", "/v1/program/campaigns", CAMPAIGN)
    assert created.status_code == 201, created.json
    url = f"/v1/program/campaigns/{created.json['id']}"
    assert twice("patch", url, {"name": "Spring"}).status_code == 200
    assert twice("delete", url).status_code == 204
    assert client.get("/v1/program/campaigns", headers=headers).json["items"] == []


def test_a_request_whose_commit_says_run_again_is_run_again(
    api: Api, client: FlaskClient, make_headers: Callable[..., Headers]
) -> None:
    """Work queued for the commit (`loyalty.db.before_commit`) that finds what the request
    decided no longer holds raises `RunAgainError`: the request's transaction (its key
    included) is rolled back and the request run again, once in effect."""
    from sqlalchemy import event
    from sqlalchemy.orm import ORMExecuteState, Session

    from loyalty.db import RunAgainError, before_commit

    headers = make_headers("members:write", "points:accrue")
    member = client.post("/v1/members", json={"external_id": "again"}, headers=headers)
    attempts: list[str] = []

    def refuse_once(session: Session) -> None:
        attempts.append("commit")
        if len(attempts) == 1:
            raise RunAgainError()

    queued_in: list[object] = []

    def queue(state: ORMExecuteState) -> None:  # once in each transaction
        transaction = state.session.get_transaction()
        if transaction is not None and transaction not in queued_in:
            queued_in.append(transaction)
            before_commit(state.session, refuse_once)

    event.listen(Session, "do_orm_execute", queue)
    try:
        body = {"member_id": member.get_json()["id"], "order_id": "again-1", "total": 1000}
        first = client.post(
            "/v1/orders", json={**body, "currency": "USD"}, headers={**headers, KEY: "k-again"}
        )
    finally:
        event.remove(Session, "do_orm_execute", queue)
    assert first.status_code == 201, first.get_json()
    assert attempts == ["commit", "commit"]
    replay = client.post(
        "/v1/orders", json={**body, "currency": "USD"}, headers={**headers, KEY: "k-again"}
    )
    assert replay.get_json() == first.get_json() and replay.headers[REPLAYED] == "true"
