"""Referrals over HTTP: the programme's terms, reviews, the member's view; statuses, bodies,
problems, scopes and Idempotency-Key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.db import get_database
from tests.referrals.conftest import WINDOW, make_member, place_order, settle, terms
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
    """Set data up through the service layer in an app context of its own."""
    with app.app_context():
        session = get_database(app).sessionmaker()
        try:
            return make(session)
        finally:
            session.close()


def held_referral(app: Flask) -> tuple[str, str, str]:
    """A referrer, and a referee whose referral is held (velocity limit 1): their ids and
    the referral's id."""

    def make(session: Session) -> tuple[str, str, str]:
        terms(session, velocity_limit=1, referrer_points=100, referee_points=50)
        ann = make_member(session)
        make_member(session, referrer=ann)
        bob = make_member(session, referrer=ann)
        from tests.referrals.conftest import referral_of

        return ann.id, bob.id, referral_of(session, bob.id).id

    return seed(app, make)


def test_terms_get_and_patch(api: Api) -> None:
    body = api("get", "/v1/program/referrals").json
    assert body["enabled"] is True and body["referrer_points"] == 0
    assert body["link_template"] is None and body["min_order_currency"] is None
    changed = api(
        "patch",
        "/v1/program/referrals",
        {
            "referrer_points": 500,
            "referee_points": 250,
            "min_order_total": 5000,
            "min_order_currency": "USD",
            "monthly_cap": 5,
            "total_cap": None,
            "shared_tier_days": 30,
            "velocity_limit": 10,
            "link_template": "https://shop.example/r/{code}",
        },
    )
    assert changed.status_code == 200, changed.json
    assert changed.json["referrer_points"] == 500 and changed.json["monthly_cap"] == 5
    assert changed.json["updated_by"] is not None
    assert api("get", "/v1/program/referrals").json["link_template"].endswith("{code}")


def test_a_currency_in_lower_case_is_taken_in_upper_case(api: Api) -> None:
    """Every currency field takes an ISO 4217 code in upper or lower case (Stripe sends lower
    case), not mixed, and answers it in upper case."""
    changed = api("patch", "/v1/program/referrals", {"min_order_currency": "eur"})
    assert changed.status_code == 200, changed.json
    assert changed.json["min_order_currency"] == "EUR"


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"referrer_points": -1}, "#/referrer_points"),
        ({"min_order_currency": "Usd"}, "#/min_order_currency"),
        ({"min_order_currency": "XXQ"}, "#/min_order_currency"),
        ({"velocity_limit": 0}, "#/velocity_limit"),
        ({"shared_tier_days": 0}, "#/shared_tier_days"),
        ({"bogus": 1}, "#"),  # unknown fields are not named
        ({"link_template": "https://shop.example/r/"}, "#/link_template"),
    ],
)
def test_terms_are_validated(api: Api, body: dict[str, Any], pointer: str) -> None:
    problem = assert_problem(api("patch", "/v1/program/referrals", body), 422, "validation-failed")
    assert pointer in [error["pointer"] for error in problem["errors"]]


def test_an_unknown_reward_is_refused(api: Api) -> None:
    problem = assert_problem(
        api("patch", "/v1/program/referrals", {"referrer_reward_id": "rwd_nope"}),
        422,
        "unknown-reward",
    )
    assert problem["errors"][0]["pointer"] == "#/referrer_reward_id"


def test_reviews_approve_and_reject(app: Flask, api: Api, clock: FrozenClock) -> None:
    ann, bob, referral_id = held_referral(app)
    page = api("get", "/v1/program/referrals/reviews?limit=1").json
    assert [item["id"] for item in page["items"]] == [referral_id]
    assert page["items"][0]["reason"] == "velocity" and page["next_cursor"] is None
    url = f"/v1/program/referrals/{referral_id}/approve"
    assert_problem(api("post", url, {}), 422, "validation-failed")
    assert_problem(api("post", url, {"reason": "  "}), 422, "validation-failed")
    first = api("post", url, {"reason": "Known"}, **{"Idempotency-Key": "approve-1"})
    assert first.status_code == 200, first.json
    assert (first.json["status"], first.json["note"]) == ("pending", "Known")
    again = api("post", url, {"reason": "Known"}, **{"Idempotency-Key": "approve-1"})
    assert again.status_code == 200 and again.json == first.json
    problem = assert_problem(api("post", url, {"reason": "x"}), 409, "referral-not-reviewable")
    assert problem["referral_status"] == "pending"
    assert api("get", "/v1/program/referrals/reviews").json["items"] == []
    rejected = api("post", f"/v1/program/referrals/{referral_id}/reject", {"reason": "Fraud"})
    assert rejected.status_code == 200
    assert (rejected.json["status"], rejected.json["reason"]) == ("rejected", "manual")
    for action in ("approve", "reject"):
        assert_problem(
            api("post", f"/v1/program/referrals/ref_nope/{action}", {"reason": "x"}),
            404,
            "referral-not-found",
        )


def test_the_members_referrals(app: Flask, api: Api, clock: FrozenClock) -> None:
    def make(session: Session) -> tuple[str, str]:
        terms(
            session,
            referrer_points=100,
            link_template="https://shop.example/join?ref={code}",
        )
        ann = make_member(session)
        bob = make_member(session, referrer=ann, name="Bob Jones")
        make_member(session, referrer=ann, email="carol@example.com")
        place_order(session, bob.id, 1000)
        clock.advance(WINDOW)
        settle(session, bob.id)
        return ann.id, ann.referral_code

    ann, code = seed(app, make)
    body = api("get", f"/v1/members/{ann}/referrals?limit=1").json
    assert body["referral_code"] == code
    assert body["link"] == f"https://shop.example/join?ref={code}"
    assert body["counts"] == {
        "invited": 2,
        "pending": 1,
        "qualified": 1,
        "held": 0,
        "rejected": 0,
        "clawed_back": 0,
    }
    assert body["points_earned"] == 100
    assert [(i["name"], i["status"]) for i in body["items"]] == [("c***@example.com", "pending")]
    rest = api("get", f"/v1/members/{ann}/referrals?cursor={body['next_cursor']}").json
    assert [(i["name"], i["status"]) for i in rest["items"]] == [("Bob", "qualified")]
    assert rest["items"][0]["qualified_at"].endswith("Z") and rest["next_cursor"] is None
    assert_problem(api("get", "/v1/members/mem_nope/referrals"), 404, "member-not-found")
    assert_problem(api("get", f"/v1/members/{ann}/referrals?limit=0"), 422, "validation-failed")


CALLS = [
    ("get", "/v1/program/referrals", "program:read"),
    ("patch", "/v1/program/referrals", "program:write"),
    ("get", "/v1/program/referrals/reviews", "program:read"),
    ("post", "/v1/program/referrals/ref_x/approve", "program:write"),
    ("post", "/v1/program/referrals/ref_x/reject", "program:write"),
    ("get", "/v1/members/mem_x/referrals", "members:read"),
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
    denied = getattr(client, method)(path, headers=make_headers("points:adjust"), **kwargs)
    assert_problem(denied, 403, "insufficient-scope")
    allowed = getattr(client, method)(path, headers=make_headers(scope), **kwargs)
    assert allowed.status_code not in (401, 403)
