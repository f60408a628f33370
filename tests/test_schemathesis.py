"""The served contract against the app: schemathesis generates requests from
``/v1/openapi.json`` for every operation and checks each answer (no server error, a declared
status, content type and body) and that schema-valid requests are accepted.

The run is deterministic (a fixed seed, derandomized generation) and runs on the real
PostgreSQL test database, one test per operation, each in the test's rolled-back transaction
with a small world made through the API (`world`: a member with points, an order, a hold, a
claim, tiers, a reward, a perk, a multiplier, a campaign, event types, a rule, a badge, a
webhook endpoint) so that valid requests can succeed. `test_api` adjusts a generated request
only where the contract states a rule that JSON Schema cannot (dates relative to now, a
window's end after its start, unique SKUs and levels, references to what exists, a new
Idempotency-Key per request). Valid requests that the API may still refuse for a business
reason are listed with the reason (`EXPECTED_REFUSALS`, `STATE_REFUSALS`). Run it alone with
``python -m pytest tests/test_schemathesis.py -n auto``.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import zlib
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from loyalty import create_app
from loyalty.api import MAX_YEAR
from tests.billing.conftest import SECRET_KEY, WEBHOOK_SECRET
from tests.billing.conftest import fake_stripe as fake_stripe  # the fake Stripe, started once
from tests.billing.fake_stripe import FakeStripe
from tests.conftest import DEFAULT_TEST_DATABASE_URL, base_config

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    positive_data_acceptance,
]
SEED = 20261122
MAX_EXAMPLES = 25

# Statuses a schema-valid request may get besides 2xx, per operation, and why. Every
# operation with a path parameter may also answer 404: most generated ids do not exist.
EXPECTED_REFUSALS: dict[str, tuple[tuple[int, ...], str]] = {
    "POST /v1/auth/token": ((401,), "generated credentials belong to no client"),
    "POST /v1/members": ((409,), "a racing enrolment of the same external_id"),
    "PATCH /v1/members/{member_id}": ((409,), "a closed member cannot change"),
    "POST /v1/orders": (
        (404, 409),
        "unknown member; the same order_id with another body; a member not active",
    ),
    "POST /v1/orders/preview": ((404,), "unknown member"),
    "POST /v1/orders/{order_id}/refunds": (
        (409,),
        "the same refund_id with another body; a member not active",
    ),
    "POST /v1/members/{member_id}/redemptions": ((409,), "insufficient points; not active"),
    "POST /v1/members/{member_id}/holds": ((409,), "insufficient points; not active"),
    "POST /v1/members/{member_id}/adjustments": ((409,), "insufficient points; not active"),
    "POST /v1/holds/{hold_id}/capture": ((409,), "the hold is no longer held"),
    "POST /v1/holds/{hold_id}/release": ((409,), "the hold is no longer held"),
    "POST /v1/program/multipliers": ((409,), "a multiplier for that SKU or category exists"),
    "DELETE /v1/program/campaigns/{campaign_id}": ((409,), "the campaign has given points"),
    "POST /v1/program/tiers": ((409,), "the code or the rank is taken"),
    "PATCH /v1/program/tiers/{code}": ((409,), "the rank is taken; members hold the base tier"),
    "DELETE /v1/program/tiers/{code}": ((409,), "members hold the tier, or rules name it"),
    "DELETE /v1/members/{member_id}/tier": ((409,), "no manual tier to end"),
    "DELETE /v1/program/rewards/{reward_id}": ((409,), "the reward has been claimed"),
    "DELETE /v1/program/perks/{perk_id}": ((409,), "the perk has been granted"),
    "POST /v1/members/{member_id}/rewards/{reward_id}/claims": (
        (409,),
        "insufficient points, out of stock, limit reached, not claimable, not active",
    ),
    "POST /v1/claims/{claim_id}/use": ((409,), "the claim is not issued any more"),
    "POST /v1/claims/{claim_id}/cancel": ((409,), "the claim is not issued any more"),
    "POST /v1/program/referrals/{referral_id}/approve": ((409,), "not held or rejected"),
    "POST /v1/program/referrals/{referral_id}/reject": ((409,), "not held or pending"),
    "POST /v1/program/event-types": ((409,), "the type exists"),
    "DELETE /v1/program/event-types/{name}": ((409,), "events, rules or badges use the type"),
    "POST /v1/program/event-rules": ((409,), "the type has a rule already"),
    "DELETE /v1/program/badges/{badge_id}": ((409,), "the badge has been awarded"),
    "POST /v1/events": (
        (404, 409),
        "unknown member; the same event_id with another body; a member not active",
    ),
    "POST /v1/members/{member_id}/check-ins": ((409,), "the same event_id; not active"),
    "POST /v1/billing/stripe/webhook": (
        (400,),
        "only Stripe can sign an event: a generated request carries no valid Stripe-Signature",
    ),
    "PUT /v1/members/{member_id}/stripe-customer": (
        (409,),
        "the member or the customer is linked to another already",
    ),
}

# Refusals that depend on what is stored, which a request's schema cannot know: (operation,
# status, problem code) -> why.
STATE_REFUSALS: dict[tuple[str, int, str], str] = {
    ("POST /v1/orders/{order_id}/refunds", 422, "refund-exceeds-order"): (
        "what is left of the order to refund"
    ),
    ("POST /v1/holds/{hold_id}/capture", 422, "capture-exceeds-hold"): "the points held",
    ("POST /v1/program/tiers", 422, "tier-ladder-order"): "the other tiers' thresholds",
    ("PATCH /v1/program/tiers/{code}", 422, "tier-ladder-order"): "the other tiers' thresholds",
    ("PATCH /v1/program/campaigns/{campaign_id}", 422, "validation-failed"): (
        "the campaign as stored (its window, multiplier or bonus, target, points given)"
    ),
    ("PATCH /v1/program/rewards/{reward_id}", 422, "validation-failed"): (
        "the reward's kind and window as stored"
    ),
    ("PATCH /v1/program/perks/{perk_id}", 422, "validation-failed"): "the perk's kind",
    ("PATCH /v1/program/event-rules/{rule_id}", 422, "validation-failed"): (
        "the rule as stored (points, per-unit property, cap)"
    ),
    ("PATCH /v1/program/event-rules/{rule_id}", 422, "invalid-event-property"): (
        "the properties its event type declares"
    ),
    ("PATCH /v1/program/badges/{badge_id}", 422, "validation-failed"): (
        "the challenge window as stored"
    ),
    ("PATCH /v1/program/event-types/{name}", 422, "invalid-event-property"): (
        "rules and badges that count a property keep it numeric"
    ),
    ("POST /v1/events", 422, "invalid-event-property"): ("the properties the event type declares"),
    ("POST /v1/members/{member_id}/tier/checkout", 422, "tier-not-paid"): (
        "whether the tier has a Stripe price"
    ),
    ("POST /v1/analytics/tier-what-if", 422, "validation-failed"): (
        "the other tiers' thresholds (a ladder rises with rank)"
    ),
    ("PATCH /v1/program/analytics", 422, "validation-failed"): (
        "silent_days above active_days, as stored"
    ),
}


def _operations_config() -> list[dict[str, Any]]:
    config = []
    for label, (statuses, _why) in EXPECTED_REFUSALS.items():
        expected = ["2xx", *(str(status) for status in statuses)]
        if "{" in label:
            expected.append("404")
        config.append(
            {
                "include-name": label,
                "checks": {
                    "positive_data_acceptance": {"expected-statuses": sorted(set(expected))}
                },
            }
        )
    return config


CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {
            "mode": "positive",
            "deterministic": True,
            "max-examples": MAX_EXAMPLES,
            "database": "none",
            # PostgreSQL text cannot hold NUL: every NUL is refused with 400 malformed-json.
            "allow-x00": False,
        },
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": False},
        },
        "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx"]}},
        "operations": [
            # Paths with a parameter: any generated id may be unknown.
            *_operations_config(),
            {
                "include-path-regex": r"\{",
                "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "404"]}},
            },
        ],
    }
)

# The spec as the app serves it; the requests go to each test's own app (see `test_api`).
schema = schemathesis.openapi.from_wsgi(
    "/v1/openapi.json", create_app(base_config(DEFAULT_TEST_DATABASE_URL)), config=CONFIG
)

# What `world` made: path parameter name -> an id that exists, and more.
WORLD: dict[str, Any] = {}


def _label(context: Any) -> str:
    operation = context.operation
    return f"{operation.method.upper()} {operation.path}"


# --- refusals for a business reason, and rules JSON Schema cannot state --------------------


@schema.hook("filter_failure")
def _state_refusals(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure but a refusal listed in `STATE_REFUSALS`."""
    if not isinstance(failure, RejectedPositiveData):
        return True
    try:
        code = json.loads(response.content or b"{}").get("code")
    except ValueError:
        return True
    return (_label(context), response.status_code, code) not in STATE_REFUSALS


def _coins(case: Any) -> dict[str, bool]:
    """Fair, repeatable coins for this case, drawn from the request as generated: the same
    request makes the same choices on every run (the seeded ids differ from run to run)."""
    data = json.dumps([case.path_parameters, case.query, case.body], sort_keys=True, default=str)
    return {
        salt: zlib.crc32(f"{salt}:{data}".encode()) % 2 == 0
        for salt in ("path", "member", "properties")
    }


def _existing_ids(case: Any, coins: dict[str, bool]) -> None:
    """Half the time, the ids in the path name what the seeding made."""
    if case.path_parameters and coins["path"]:
        for name in case.path_parameters:
            if name in WORLD:
                case.path_parameters[name] = WORLD[name]


def _real_cursor(case: Any) -> None:
    """A cursor is opaque: the server reads only what it wrote. Give one in its format (the
    sort key, here digits, inside base64url JSON), keyed on what was generated."""
    if case.query and isinstance(case.query.get("cursor"), str):
        digits = "".join(c for c in case.query["cursor"] if c in "0123456789")[:18] or "0"
        after = digits
        if case.operation.path.endswith("/orders"):
            # A member's orders page by when they were placed, then by order.
            after = f"2026-01-01T00:00:00+00:00|ord_{digits}"
        raw = json.dumps({"after": after}, separators=(",", ":")).encode()
        case.query["cursor"] = base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _new_idempotency_key(case: Any) -> None:
    """A new key for each new request, as the contract asks of clients."""
    if case.headers and "Idempotency-Key" in case.headers:
        key = f"{next(_keys)}-{case.headers['Idempotency-Key']}"
        case.headers["Idempotency-Key"] = key[:255].rstrip()


_keys = itertools.count(1)


def _parse(value: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _not_after_now(body: dict[str, Any], name: str) -> None:
    """The field may be in the past (or a few minutes ahead), not later."""
    moment = _parse(body.get(name))
    if moment is not None and moment > dt.datetime.now(dt.UTC):
        body[name] = _iso(dt.datetime.now(dt.UTC) - dt.timedelta(days=1))


def _recent(body: dict[str, Any], name: str) -> None:
    """Orders and events are dated within the programme's maximum age (30 days by default)
    and at most a few minutes ahead: history comes in through `loyalty import`."""
    moment = _parse(body.get(name))
    now = dt.datetime.now(dt.UTC)
    if moment is not None and not now - dt.timedelta(days=29) <= moment <= now:
        body[name] = _iso(now - dt.timedelta(days=1))


def _in_future(body: dict[str, Any], name: str) -> None:
    moment = _parse(body.get(name))
    if moment is not None and moment <= dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1):
        body[name] = _iso(dt.datetime.now(dt.UTC) + dt.timedelta(days=30))


def _window(body: dict[str, Any], start: str, end: str) -> None:
    """``end`` after ``start``: swap them, or move one a day."""
    first, last = _parse(body.get(start)), _parse(body.get(end))
    if first is None or last is None or last > first:
        return
    if last < first:
        body[start], body[end] = body[end], body[start]
    elif first.year < MAX_YEAR - 1:
        body[end] = _iso(first + dt.timedelta(days=1))
    else:
        body[start] = _iso(first - dt.timedelta(days=1))


def _unique_by(items: Any, key: str) -> Any:
    if not isinstance(items, list):
        return items
    seen: set[Any] = set()
    result = []
    for item in items:
        if isinstance(item, dict) and item.get(key) in seen:
            continue
        seen.add(item.get(key) if isinstance(item, dict) else None)
        result.append(item)
    return result


def _levels(levels: Any) -> Any:
    """Thresholds strictly increasing, names all different."""
    if not isinstance(levels, list):
        return levels
    by_threshold: dict[Decimal, Any] = {}
    for level in _unique_by(levels, "name"):
        try:
            threshold = Decimal(str(level["threshold"])).quantize(Decimal("0.0001"))
        except (KeyError, TypeError, ArithmeticError):
            return levels
        by_threshold.setdefault(threshold, level)
    return [by_threshold[threshold] for threshold in sorted(by_threshold)]


def _fit_metadata(metadata: Any, limit: int = 4096) -> Any:
    if not isinstance(metadata, dict):
        return metadata
    metadata = dict(metadata)
    while metadata and len(json.dumps(metadata)) > limit:
        metadata.pop(next(iter(metadata)))
    return metadata


def _contract_rules(case: Any, coins: dict[str, bool]) -> None:
    """Rules the contract states in words (dates relative to now, one window after its start,
    unique SKUs and levels) and references to what exists (tiers, rewards, event types)."""
    query = case.query or {}
    if isinstance(query.get("from"), str) and isinstance(query.get("to"), str):
        # A period's first day is not after its last.
        query["from"], query["to"] = sorted((query["from"], query["to"]))
    body = case.body
    if not isinstance(body, dict):
        return
    label = case.operation.label
    _not_after_now(body, "enrolled_at")
    for name in ("placed_at", "occurred_at"):
        _recent(body, name)
    if label == "POST /v1/members/{member_id}/tier":
        _in_future(body, "until")
    for start, end in (
        ("starts_at", "ends_at"),
        ("available_from", "available_until"),
        ("since", "until"),
    ):
        _window(body, start, end)
    if isinstance(body.get("birthday"), str) and body["birthday"] > dt.date.today().isoformat():
        body["birthday"] = "1990-01-01"
    if "metadata" in body:
        body["metadata"] = _fit_metadata(body["metadata"])
    if "items" in body:
        body["items"] = _unique_by(body["items"], "sku")
    if "levels" in body:
        body["levels"] = _levels(body["levels"])
    if label == "POST /v1/program/tiers" and isinstance(body.get("retain_threshold"), int):
        body["retain_threshold"] = min(body["retain_threshold"], body.get("threshold", 0))
    if "referral_code" in body:
        body["referral_code"] = WORLD["referral_code"]
    if label.startswith("POST /v1/members/{member_id}/tier") and "tier" in body:
        body["tier"] = WORLD["tier_code"]
    if isinstance(body.get("tier_codes"), list):
        body["tier_codes"] = [WORLD["tier_code"]] * min(len(body["tier_codes"]), 1)
    for name in ("reward_id", "referrer_reward_id", "referee_reward_id"):
        if isinstance(body.get(name), str):
            body[name] = WORLD["reward_id"]
    if isinstance(body.get("target_values"), list) and body.get("target") in ("tiers", "members"):
        known = WORLD["tier_code"] if body["target"] == "tiers" else WORLD["member_id"]
        body["target_values"] = [known]
    if label == "POST /v1/program/badges":
        if isinstance(body.get("event_type"), str):
            body["event_type"] = WORLD["event_type"]
        if isinstance(body.get("property"), str):
            body["property"] = WORLD["event_property"]
    if label == "POST /v1/analytics/tier-what-if" and isinstance(body.get("thresholds"), dict):
        values = list(body["thresholds"].values())[:1]
        body["thresholds"] = dict(zip([WORLD["tier_code"]], values, strict=False))
    if label == "POST /v1/program/event-rules":
        # A type has one rule: the seeded one without a rule yet, and its numeric property.
        body["event_type"] = WORLD["unruled_event_type"]
        if isinstance(body.get("per_unit_property"), str):
            body["per_unit_property"] = WORLD["unruled_event_property"]
    if label == "POST /v1/orders/{order_id}/refunds" and isinstance(body.get("items"), list):
        # Refunded items name items of the order.
        body["items"] = [{**item, "sku": "tee"} for item in body["items"][:1]]
    if label == "POST /v1/events":
        body["type"] = WORLD["event_type"]
        if coins["properties"]:
            body["properties"] = {WORLD["event_property"]: 2.5}
    if label in ("POST /v1/orders", "POST /v1/orders/preview", "POST /v1/events"):
        if coins["member"]:
            body["member_id"] = WORLD["member_id"]


# --- the seeded world ---------------------------------------------------------------------


@pytest.fixture
def world(client: FlaskClient, headers: dict[str, str]) -> Iterator[dict[str, Any]]:
    """A small programme and a member with history, made through the API."""

    def post(path: str, body: Any) -> Any:
        response = client.post(path, json=body, headers=headers)
        assert response.status_code in (200, 201), (path, response.json)
        return response.json

    for rank, (code, threshold) in enumerate((("bronze", 0), ("silver", 1000), ("gold", 5000))):
        post(
            "/v1/program/tiers",
            {"code": code, "name": code.title(), "rank": rank + 1, "threshold": threshold},
        )
    referrer = post(
        "/v1/members",
        {
            "external_id": "seed-1",
            "email": "ada@example.com",
            "name": "Ada",
            "timezone": "Europe/Berlin",
        },
    )
    member_id = referrer["id"]
    post(
        "/v1/members",
        {"external_id": "seed-2", "name": "Bob", "referral_code": referrer["referral_code"]},
    )
    post(f"/v1/members/{member_id}/adjustments", {"points": 100_000, "reason": "seed"})
    post(
        "/v1/orders",
        {
            "order_id": "seed-order-1",
            "member_id": member_id,
            "total": 100_000,
            "currency": "USD",
            "items": [{"sku": "tee", "quantity": 2, "unit_price": 50_000}],
        },
    )
    hold = post(f"/v1/members/{member_id}/holds", {"points": 100})
    reward = post("/v1/program/rewards", {"kind": "custom", "name": "Tote", "points_cost": 10})
    claim = post(f"/v1/members/{member_id}/rewards/{reward['id']}/claims", {})
    perk = post(
        "/v1/program/perks", {"kind": "free_shipping", "name": "Shipping", "tier_codes": ["gold"]}
    )
    multiplier = post(
        "/v1/program/multipliers", {"scope": "sku", "match": "tee", "multiplier": "2"}
    )
    now = dt.datetime.now(dt.UTC)
    campaign = post(
        "/v1/program/campaigns",
        {
            "name": "Autumn",
            "bonus_points": 10,
            "starts_at": _iso(now - dt.timedelta(days=1)),
            "ends_at": _iso(now + dt.timedelta(days=30)),
        },
    )
    event_type = post(
        "/v1/program/event-types",
        {
            "name": "recycling.dropped_off",
            "properties": {"co2_kg": {"type": "number", "required": False}},
        },
    )
    rule = post("/v1/program/event-rules", {"event_type": event_type["name"], "points": 5})
    post(
        "/v1/program/event-types",
        {
            "name": "review.posted",
            "properties": {"stars": {"type": "integer"}},
        },
    )
    badge = post(
        "/v1/program/badges",
        {"name": "Regular", "rule": "streak", "levels": [{"name": "Week", "threshold": "7"}]},
    )
    endpoint = post(
        "/v1/webhooks/endpoints",
        {"url": "https://hooks.example.com/loyalty", "event_types": ["points.*"]},
    )
    referrals = client.get(f"/v1/members/{member_id}/referrals", headers=headers).json
    WORLD.clear()
    WORLD.update(
        member_id=member_id,
        referral_code=referrer["referral_code"],
        order_id="seed-order-1",
        hold_id=hold["id"],
        reward_id=reward["id"],
        claim_id=claim["id"],
        perk_id=perk["id"],
        multiplier_id=multiplier["id"],
        campaign_id=campaign["id"],
        code="gold",
        tier_code="gold",
        name=event_type["name"],
        event_type=event_type["name"],
        event_property="co2_kg",
        unruled_event_type="review.posted",
        unruled_event_property="stars",
        rule_id=rule["id"],
        badge_id=badge["id"],
        referral_id=referrals["items"][0]["referral_id"],
        endpoint_id=endpoint["id"],
    )
    yield WORLD
    WORLD.clear()


@pytest.fixture
def billing(
    app: Flask,
    fake_stripe: FakeStripe,
    client: FlaskClient,
    headers: dict[str, str],
    world: dict[str, Any],
) -> Iterator[None]:
    """Stripe billing on, against the fake Stripe: the seeded member linked to a customer and
    the gold tier sold with a Stripe price."""
    settings_ = {
        "STRIPE_SECRET_KEY": SECRET_KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_API_BASE": fake_stripe.url,
        "STRIPE_SUCCESS_URL": "https://shop.example/thanks",
        "STRIPE_CANCEL_URL": "https://shop.example/cart",
    }
    before = {key: app.config.get(key) for key in settings_}
    app.config.update(settings_)
    member_id = world["member_id"]
    linked = client.put(
        f"/v1/members/{member_id}/stripe-customer",
        json={"customer_id": "cus_seed1"},
        headers=headers,
    )
    assert linked.status_code == 201, linked.json
    priced = client.patch(
        "/v1/program/tiers/gold", json={"stripe_price_id": "price_gold"}, headers=headers
    )
    assert priced.status_code == 200, priced.json
    try:
        yield
    finally:
        app.config.update(before)


@schema.parametrize()
# The examples of one operation share its app, transaction and world on purpose (state builds
# up as a client's would); the transaction is rolled back after the operation's test.
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_api(
    case: Any, app: Flask, headers: dict[str, str], world: dict[str, Any], billing: None
) -> None:
    coins = _coins(case)
    _existing_ids(case, coins)
    _real_cursor(case)
    _new_idempotency_key(case)
    _contract_rules(case, coins)
    case.call_and_validate(app=app, headers=headers, checks=CHECKS)
