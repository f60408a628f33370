"""Perks, rewards and claims over HTTP: statuses, bodies, problems and Idempotency-Key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.db import get_database
from tests.rewards.conftest import DAY, make_member, make_tiers
from tests.test_problems import assert_problem

Headers = dict[str, str]
Api = Callable[..., Any]
T = TypeVar("T")


@pytest.fixture
def api(client: FlaskClient, headers: Headers, clock: FrozenClock) -> Api:
    def call(method: str, url: str, body: Any = None, **extra: str) -> Any:
        kwargs: dict[str, Any] = {"headers": {**headers, **extra}}
        if body is not None:
            kwargs["json"] = body
        return getattr(client, method)(url, **kwargs)

    return call


def seed(app: Flask, make: Callable[[Session], T]) -> T:
    """Set data up through the service layer in an app context of its own, ended before the
    requests (which would otherwise share the test's app context and its request session)."""
    with app.app_context():
        session = get_database(app).sessionmaker()
        try:
            return make(session)
        finally:
            session.close()


@pytest.fixture
def ladder(app: Flask, clock: FrozenClock) -> None:
    seed(app, make_tiers)


@pytest.fixture
def rich(app: Flask, ladder: None) -> str:
    """A member with 1000 points and the gold tier."""
    return seed(app, lambda session: make_member(session, points=1000, tier="gold"))


def new_reward(api: Api, **values: Any) -> dict[str, Any]:
    response = api(
        "post",
        "/v1/program/rewards",
        {"kind": "custom", "name": "Tote", "points_cost": 100, **values},
    )
    assert response.status_code == 201, response.json
    return dict(response.json)


# --- catalogue administration ---------------------------------------------------------------


def test_reward_crud(api: Api, ladder: None) -> None:
    created = new_reward(
        api,
        kind="percentage_discount",
        name="15% off",
        points_cost=300,
        percent=15,
        tier_codes=["gold"],
        stock=5,
        per_member_limit=1,
        available_from="2026-03-01T00:00:00Z",
        available_until="2026-04-01T00:00:00+02:00",
        coupon_valid_days=14,
    )
    reward_id = created.pop("id")
    assert reward_id.startswith("rwd_")
    assert created == {
        "kind": "percentage_discount",
        "name": "15% off",
        "description": None,
        "points_cost": 300,
        "amount": None,
        "currency": None,
        "percent": 15,
        "sku": None,
        "tier_codes": ["gold"],
        "stock": 5,
        "per_member_limit": 1,
        "available_from": "2026-03-01T00:00:00Z",
        "available_until": "2026-03-31T22:00:00Z",
        "coupon_valid_days": 14,
        "active": True,
        "created_at": "2026-03-10T12:00:00Z",
        "updated_at": "2026-03-10T12:00:00Z",
    }
    url = f"/v1/program/rewards/{reward_id}"
    assert api("get", url).json["percent"] == 15
    patched = api("patch", url, {"percent": 20, "description": "Spring sale"})
    assert patched.status_code == 200
    assert (patched.json["percent"], patched.json["description"]) == (20, "Spring sale")
    page = api("get", "/v1/program/rewards?limit=1").json
    assert [r["id"] for r in page["items"]] == [reward_id] and page["next_cursor"] is None
    assert api("get", "/v1/program/rewards?active=false").json["items"] == []
    audit = api("get", f"/v1/audit?entity_type=reward&entity_id={reward_id}")
    assert [r["action"] for r in audit.json["items"]] == ["updated", "created"]
    deleted = api("delete", url)
    assert (deleted.status_code, deleted.data) == (204, b"")
    assert_problem(api("get", url), 404, "reward-not-found")
    assert_problem(api("patch", url, {"name": "x"}), 404, "reward-not-found")
    assert_problem(api("delete", url), 404, "reward-not-found")


@pytest.mark.parametrize(
    ("body", "pointer", "code"),
    [
        ({"kind": "gift card", "name": "x", "points_cost": 1}, "#/kind", "validation-failed"),
        ({"kind": "custom", "name": "x", "points_cost": 0}, "#/points_cost", "validation-failed"),
        ({"kind": "custom", "name": "", "points_cost": 1}, "#/name", "validation-failed"),
        ({"kind": "custom", "points_cost": 1}, "#/name", "validation-failed"),
        (
            {"kind": "percentage_discount", "name": "x", "points_cost": 1, "percent": 150},
            "#/percent",
            "validation-failed",
        ),
        (
            {"kind": "percentage_discount", "name": "x", "points_cost": 1},
            "#/percent",
            "validation-failed",
        ),
        (
            {
                "kind": "fixed_discount",
                "name": "x",
                "points_cost": 1,
                "amount": 5,
                "currency": "ABC",
            },
            "#/currency",
            "validation-failed",
        ),
        (
            {"kind": "fixed_discount", "name": "x", "points_cost": 1, "amount": 500},
            "#/currency",
            "validation-failed",
        ),
        (
            {"kind": "custom", "name": "x", "points_cost": 1, "tier_codes": ["tin"]},
            "#/tier_codes",
            "unknown-tier",
        ),
        (
            {
                "kind": "custom",
                "name": "x",
                "points_cost": 1,
                "available_from": "2026-04-01T00:00:00Z",
                "available_until": "2026-03-01T00:00:00Z",
            },
            "#/available_until",
            "validation-failed",
        ),
        ({"kind": "custom", "name": "x", "points_cost": 1, "surprise": 1}, "#", None),
    ],
)
def test_invalid_rewards_are_422(
    api: Api, ladder: None, body: dict[str, Any], pointer: str, code: str | None
) -> None:
    problem = assert_problem(
        api("post", "/v1/program/rewards", body), 422, code or "validation-failed"
    )
    assert pointer in [error["pointer"] for error in problem["errors"]]


def test_kind_cannot_change(api: Api) -> None:
    reward = new_reward(api)
    response = api("patch", f"/v1/program/rewards/{reward['id']}", {"kind": "free_product"})
    assert_problem(response, 422, "validation-failed")


def test_perk_crud(api: Api, ladder: None) -> None:
    gift = new_reward(api, kind="free_product", sku="mug", name="Mug")
    created = api(
        "post",
        "/v1/program/perks",
        {
            "kind": "birthday_gift",
            "name": "Birthday",
            "tier_codes": ["gold"],
            "bonus_points": 250,
            "reward_id": gift["id"],
        },
    )
    assert created.status_code == 201
    perk = created.json
    assert perk["id"].startswith("prk_")
    assert {k: perk[k] for k in ("kind", "tier_codes", "bonus_points", "reward_id", "percent")} == {
        "kind": "birthday_gift",
        "tier_codes": ["gold"],
        "bonus_points": 250,
        "reward_id": gift["id"],
        "percent": None,
    }
    url = f"/v1/program/perks/{perk['id']}"
    assert api("get", url).json == perk
    patched = api("patch", url, {"tier_codes": ["silver", "gold"], "active": False})
    assert (patched.json["tier_codes"], patched.json["active"]) == (["silver", "gold"], False)
    assert [p["id"] for p in api("get", "/v1/program/perks?kind=birthday_gift").json["items"]] == [
        perk["id"]
    ]
    assert api("get", "/v1/program/perks?kind=free_shipping").json["items"] == []
    assert_problem(api("delete", f"/v1/program/rewards/{gift['id']}"), 409, "reward-in-use")
    assert api("delete", url).status_code == 204
    assert_problem(api("get", url), 404, "perk-not-found")
    assert_problem(api("patch", url, {"name": "x"}), 404, "perk-not-found")
    assert_problem(api("delete", url), 404, "perk-not-found")


@pytest.mark.parametrize(
    ("body", "pointer", "code"),
    [
        ({"kind": "exclusive_discount", "name": "x"}, "#/percent", "validation-failed"),
        ({"kind": "birthday_gift", "name": "x"}, "#/bonus_points", "validation-failed"),
        (
            {"kind": "free_shipping", "name": "x", "tier_codes": ["tin"]},
            "#/tier_codes",
            "unknown-tier",
        ),
        (
            {"kind": "birthday_gift", "name": "x", "reward_id": "rwd_x"},
            "#/reward_id",
            "unknown-reward",
        ),
        ({"kind": "spa day", "name": "x"}, "#/kind", "validation-failed"),
    ],
)
def test_invalid_perks_are_422(
    api: Api, ladder: None, body: dict[str, Any], pointer: str, code: str
) -> None:
    problem = assert_problem(api("post", "/v1/program/perks", body), 422, code)
    assert pointer in [error["pointer"] for error in problem["errors"]]


# --- the member's view ----------------------------------------------------------------------


def test_member_perks_and_rewards(api: Api, rich: str) -> None:
    api(
        "post",
        "/v1/program/perks",
        {"kind": "free_shipping", "name": "Ship", "tier_codes": ["gold"]},
    )
    api(
        "post",
        "/v1/program/perks",
        {"kind": "birthday_gift", "name": "Bday", "tier_codes": ["gold"], "bonus_points": 5},
    )
    perks = api("get", f"/v1/members/{rich}/perks")
    assert perks.status_code == 200
    assert [p["kind"] for p in perks.json["items"]] == ["free_shipping", "birthday_gift"]
    assert perks.json["items"][0]["birthday"] is None
    assert perks.json["items"][1]["birthday"] == {
        "year": 2026,
        "granted_at": None,
        "next_due_month": None,
    }
    open_ = new_reward(api, name="open")
    costly = new_reward(api, name="costly", points_cost=5000)
    new_reward(api, name="off", active=False)
    rewards = api("get", f"/v1/members/{rich}/rewards").json
    assert [(r["id"], r["eligible"], r["reason"]) for r in rewards["items"]] == [
        (open_["id"], True, None),
        (costly["id"], False, "insufficient_points"),
    ]
    assert rewards["items"][0]["points_cost"] == 100
    assert rewards["next_cursor"] is None
    assert_problem(api("get", "/v1/members/mem_nope/perks"), 404, "member-not-found")
    assert_problem(api("get", "/v1/members/mem_nope/rewards"), 404, "member-not-found")


# --- claims ---------------------------------------------------------------------------------


def test_claim_use_and_lookup(api: Api, rich: str, clock: FrozenClock) -> None:
    reward = new_reward(api, points_cost=250, stock=2, coupon_valid_days=5)
    created = api("post", f"/v1/members/{rich}/rewards/{reward['id']}/claims", {"reference": "c-1"})
    assert created.status_code == 201
    claim = created.json
    assert claim["id"].startswith("clm_") and claim["redemption_id"].startswith("red_")
    assert len(claim["coupon_code"]) == 16
    assert {k: claim[k] for k in ("reward_id", "member_id", "points", "status", "expires_at")} == {
        "reward_id": reward["id"],
        "member_id": rich,
        "points": 250,
        "status": "issued",
        "expires_at": "2026-03-15T12:00:00Z",
    }
    assert claim["balance"] == {"available": 750, "pending": 0, "held": 0}
    assert claim["source"] == "purchase" and claim["reference"] == "c-1"
    assert api("get", f"/v1/program/rewards/{reward['id']}").json["stock"] == 1

    got = api("get", f"/v1/claims/{claim['id']}").json
    assert got["coupon_code"] == claim["coupon_code"] and "balance" not in got
    found = api("get", f"/v1/claims?coupon_code={claim['coupon_code'].lower()}").json
    assert [c["id"] for c in found["items"]] == [claim["id"]]
    assert api("get", "/v1/claims?coupon_code=NOPE").json == {"items": [], "next_cursor": None}
    assert_problem(api("get", "/v1/claims"), 422, "validation-failed")

    used = api("post", f"/v1/claims/{claim['id']}/use")
    assert (used.status_code, used.json["status"], used.json["used_at"]) == (
        200,
        "used",
        "2026-03-10T12:00:00Z",
    )
    again = assert_problem(api("post", f"/v1/claims/{claim['id']}/use"), 409, "claim-not-issued")
    assert again["claim_status"] == "used"
    assert_problem(api("post", f"/v1/claims/{claim['id']}/cancel"), 409, "claim-not-issued")

    second = api("post", f"/v1/members/{rich}/rewards/{reward['id']}/claims", {}).json
    clock.advance(5 * DAY)
    assert api("get", f"/v1/claims/{second['id']}").json["status"] == "expired"
    expired = assert_problem(api("post", f"/v1/claims/{second['id']}/use"), 409, "claim-not-issued")
    assert expired["claim_status"] == "expired"
    page = api("get", f"/v1/members/{rich}/claims?limit=1").json
    assert [c["id"] for c in page["items"]] == [second["id"]] and page["next_cursor"]
    rest = api("get", f"/v1/members/{rich}/claims?limit=1&cursor={page['next_cursor']}").json
    assert [c["id"] for c in rest["items"]] == [claim["id"]] and rest["next_cursor"] is None
    used_only = api("get", f"/v1/members/{rich}/claims?status=used").json["items"]
    assert [c["id"] for c in used_only] == [claim["id"]]
    assert_problem(api("get", f"/v1/members/{rich}/claims?status=lost"), 422, "validation-failed")
    assert_problem(api("get", f"/v1/members/{rich}/claims?cursor=%%%"), 422, "validation-failed")


def test_claim_without_a_body_and_cancel(
    api: Api, client: FlaskClient, headers: Headers, rich: str
) -> None:
    reward = new_reward(api, points_cost=400, stock=1)
    created = client.post(f"/v1/members/{rich}/rewards/{reward['id']}/claims", headers=headers)
    assert created.status_code == 201, created.json
    claim_id = created.json["id"]  # type: ignore[index]
    cancelled = api("post", f"/v1/claims/{claim_id}/cancel")
    assert cancelled.status_code == 200
    assert (cancelled.json["status"], cancelled.json["points_returned"]) == ("cancelled", 400)
    assert cancelled.json["balance"] == {"available": 1000, "pending": 0, "held": 0}
    assert api("get", f"/v1/program/rewards/{reward['id']}").json["stock"] == 1
    assert_problem(api("post", f"/v1/claims/{claim_id}/cancel"), 409, "claim-not-issued")


def test_claim_refusals(api: Api, app: Flask, rich: str) -> None:
    def claim(reward_id: str, member_id: str = rich) -> Any:
        return api("post", f"/v1/members/{member_id}/rewards/{reward_id}/claims", {})

    body = assert_problem(
        claim(new_reward(api, points_cost=1001)["id"]), 409, "insufficient-points"
    )
    assert (body["available"], body["requested"]) == (1000, 1001)
    body = assert_problem(claim(new_reward(api, stock=0)["id"]), 409, "out-of-stock")
    assert body["reason"] == "out_of_stock"
    limited = new_reward(api, per_member_limit=1)["id"]
    assert claim(limited).status_code == 201
    body = assert_problem(claim(limited), 409, "claim-limit-reached")
    assert (body["limit"], body["reason"]) == (1, "limit_reached")
    body = assert_problem(claim(new_reward(api, active=False)["id"]), 409, "reward-not-claimable")
    assert body["reason"] == "inactive"
    silver_only = new_reward(api, tier_codes=["silver"])["id"]
    body = assert_problem(claim(silver_only), 409, "reward-not-claimable")
    assert body["reason"] == "tier"
    later = new_reward(api, available_from="2026-04-01T00:00:00Z")["id"]
    assert (
        assert_problem(claim(later), 409, "reward-not-claimable")["reason"] == "not_yet_available"
    )
    assert_problem(claim("rwd_nope"), 404, "reward-not-found")
    assert_problem(claim(limited, "mem_nope"), 404, "member-not-found")
    bad = api("post", f"/v1/members/{rich}/rewards/{limited}/claims", {"reference": 5})
    assert_problem(bad, 422, "validation-failed")
    suspended = seed(app, lambda session: make_member(session, points=500))
    api("patch", f"/v1/members/{suspended}", {"status": "suspended"})
    assert_problem(claim(new_reward(api)["id"], suspended), 409, "member-not-active")


def test_claims_not_found(api: Api) -> None:
    assert_problem(api("get", "/v1/claims/clm_nope"), 404, "claim-not-found")
    assert_problem(api("post", "/v1/claims/clm_nope/use"), 404, "claim-not-found")
    assert_problem(api("post", "/v1/claims/clm_nope/cancel"), 404, "claim-not-found")
    assert_problem(api("get", "/v1/members/mem_nope/claims"), 404, "member-not-found")


def test_a_claim_with_an_idempotency_key_happens_once(api: Api, rich: str) -> None:
    reward = new_reward(api, points_cost=300)
    url = f"/v1/members/{rich}/rewards/{reward['id']}/claims"
    first = api("post", url, {}, **{"Idempotency-Key": "claim-1"})
    again = api("post", url, {}, **{"Idempotency-Key": "claim-1"})
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.data == first.data and again.headers["Idempotent-Replayed"] == "true"
    assert len(api("get", f"/v1/members/{rich}/claims").json["items"]) == 1
    assert api("get", f"/v1/members/{rich}/balance").json["available"] == 700
    other = api("post", url, {"reference": "x"}, **{"Idempotency-Key": "claim-1"})
    assert_problem(other, 422, "idempotency-key-reused")


def test_a_replayed_claim_is_the_first_answer_and_a_claim_by_reference_is_the_claim_now(
    api: Api, rich: str
) -> None:
    """An Idempotency-Key replay is the response as it was first sent (201, issued) even after
    the coupon was used; the claim's status now is one GET away. A repeated ``reference`` is
    the same claim as it is now (200, used)."""
    reward = new_reward(api, points_cost=100)
    url = f"/v1/members/{rich}/rewards/{reward['id']}/claims"
    keyed = api("post", url, {}, **{"Idempotency-Key": "claim-k"})
    referenced = api("post", url, {"reference": "cart-1"})
    for claim in (keyed, referenced):
        assert claim.status_code == 201
        assert api("post", f"/v1/claims/{claim.json['id']}/use").status_code == 200

    replay = api("post", url, {}, **{"Idempotency-Key": "claim-k"})
    assert (replay.status_code, replay.headers["Idempotent-Replayed"]) == (201, "true")
    assert replay.data == keyed.data and replay.json["status"] == "issued"
    assert api("get", f"/v1/claims/{keyed.json['id']}").json["status"] == "used"

    again = api("post", url, {"reference": "cart-1"})
    assert (again.status_code, again.json["id"], again.json["status"]) == (
        200,
        referenced.json["id"],
        "used",
    )
    assert again.json["balance"] == {"available": 800, "pending": 0, "held": 0}
    assert len(api("get", f"/v1/members/{rich}/claims").json["items"]) == 2


def test_a_retried_use_with_its_key_succeeds_and_another_use_is_refused(
    api: Api, rich: str
) -> None:
    """A storefront retries a use whose answer it lost with the same Idempotency-Key and gets
    the first 200 again; any other use of a used coupon (no key, or another key: another
    checkout) is 409, since a coupon is good for one order."""
    reward = new_reward(api, points_cost=100)
    claim = api("post", f"/v1/members/{rich}/rewards/{reward['id']}/claims", {}).json
    use = f"/v1/claims/{claim['id']}/use"
    first = api("post", use, **{"Idempotency-Key": "use-1"})
    retry = api("post", use, **{"Idempotency-Key": "use-1"})
    assert (first.status_code, first.json["status"]) == (200, "used")
    assert (retry.status_code, retry.headers["Idempotent-Replayed"]) == (200, "true")
    assert retry.data == first.data
    for extra in ({}, {"Idempotency-Key": "use-2"}):
        refused = assert_problem(api("post", use, **extra), 409, "claim-not-issued")
        assert refused["claim_status"] == "used"


# --- authentication and scopes --------------------------------------------------------------

CALLS = [
    ("get", "/v1/program/rewards", "program:read"),
    ("post", "/v1/program/rewards", "program:write"),
    ("get", "/v1/program/rewards/rwd_x", "program:read"),
    ("patch", "/v1/program/rewards/rwd_x", "program:write"),
    ("delete", "/v1/program/rewards/rwd_x", "program:write"),
    ("get", "/v1/program/perks", "program:read"),
    ("post", "/v1/program/perks", "program:write"),
    ("get", "/v1/program/perks/prk_x", "program:read"),
    ("patch", "/v1/program/perks/prk_x", "program:write"),
    ("delete", "/v1/program/perks/prk_x", "program:write"),
    ("get", "/v1/members/mem_x/perks", "members:read"),
    ("get", "/v1/members/mem_x/rewards", "members:read"),
    ("get", "/v1/members/mem_x/claims", "members:read"),
    ("post", "/v1/members/mem_x/rewards/rwd_x/claims", "points:redeem"),
    ("get", "/v1/claims?coupon_code=X", "points:redeem"),
    ("get", "/v1/claims/clm_x", "points:redeem"),
    ("post", "/v1/claims/clm_x/use", "points:redeem"),
    ("post", "/v1/claims/clm_x/cancel", "points:redeem"),
]


@pytest.mark.parametrize(("method", "path", "scope"), CALLS)
def test_scopes(
    app: Flask,
    client: FlaskClient,
    make_headers: Callable[..., Headers],
    method: str,
    path: str,
    scope: str,
) -> None:
    kwargs: dict[str, Any] = {"json": {}} if method in ("post", "patch") else {}
    assert_problem(getattr(client, method)(path, **kwargs), 401, "unauthenticated")
    wrong = "points:adjust" if scope != "points:adjust" else "members:read"
    denied = getattr(client, method)(path, headers=make_headers(wrong), **kwargs)
    assert_problem(denied, 403, "insufficient-scope")
    allowed = getattr(client, method)(path, headers=make_headers(scope), **kwargs)
    assert allowed.status_code not in (401, 403)
