"""The tier calls over HTTP: the ladder and policy, a member's tier, manual assignment and
history, with their problems."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from loyalty.clock import FrozenClock
from tests.test_problems import assert_problem

Headers = dict[str, str]
GOLD = {
    "code": "gold",
    "name": "Gold",
    "rank": 3,
    "threshold": 1000,
    "benefits": "Free shipping",
    "points_multiplier": "1.5",
}


@pytest.fixture
def api(client: FlaskClient, headers: Headers, clock: FrozenClock) -> Callable[..., Any]:
    def call(method: str, url: str, body: Any = None, headers_: Headers | None = None) -> Any:
        kwargs: dict[str, Any] = {"headers": headers if headers_ is None else headers_}
        if body is not None:
            kwargs["json"] = body
        return getattr(client, method)(url, **kwargs)

    return call


@pytest.fixture
def ladder(api: Callable[..., Any]) -> None:
    for body in (
        {"code": "bronze", "name": "Bronze", "rank": 1, "threshold": 0},
        {"code": "silver", "name": "Silver", "rank": 2, "threshold": 500},
        GOLD,
    ):
        assert api("post", "/v1/program/tiers", body).status_code == 201


@pytest.fixture
def member_id(api: Callable[..., Any]) -> str:
    response = api("post", "/v1/members", {"external_id": "tier-shopper"})
    assert response.status_code == 201
    return str(response.json["id"])


def test_create_list_get_update_delete_tiers(api: Callable[..., Any], ladder: None) -> None:
    listed = api("get", "/v1/program/tiers")
    assert listed.status_code == 200
    assert [t["code"] for t in listed.json["items"]] == ["bronze", "silver", "gold"]
    gold = api("get", "/v1/program/tiers/gold").json
    assert {k: gold[k] for k in GOLD} == {**GOLD, "points_multiplier": "1.5000"}
    assert gold["retain_threshold"] is None and gold["created_at"].endswith("Z")

    patched = api("patch", "/v1/program/tiers/gold", {"name": "Golden", "retain_threshold": 800})
    assert patched.status_code == 200
    assert (patched.json["name"], patched.json["retain_threshold"]) == ("Golden", 800)

    created = api(
        "post", "/v1/program/tiers", {"code": "vip-1", "name": "VIP", "rank": 9, "threshold": 9999}
    )
    assert created.status_code == 201 and created.json["points_multiplier"] == "1.0000"
    deleted = api("delete", "/v1/program/tiers/vip-1")
    assert (deleted.status_code, deleted.data) == (204, b"")
    assert_problem(api("get", "/v1/program/tiers/vip-1"), 404, "tier-not-found")


def test_tier_problems(api: Callable[..., Any], ladder: None, member_id: str) -> None:
    assert_problem(api("post", "/v1/program/tiers", GOLD), 409, "tier-exists")
    body = assert_problem(
        api("post", "/v1/program/tiers", {**GOLD, "code": "plat"}), 409, "tier-rank-taken"
    )
    assert body["tier"] == "gold"
    body = assert_problem(
        api("post", "/v1/program/tiers", {**GOLD, "code": "plat", "rank": 4, "threshold": 10}),
        422,
        "tier-ladder-order",
    )
    assert body["errors"][0]["pointer"] == "#/threshold"
    retain = assert_problem(
        api("patch", "/v1/program/tiers/silver", {"retain_threshold": 501}),
        422,
        "tier-ladder-order",
    )
    assert "retain_threshold" in retain["detail"]
    assert_problem(api("patch", "/v1/program/tiers/silver", {"rank": 3}), 409, "tier-rank-taken")
    assert_problem(
        api("patch", "/v1/program/tiers/silver", {"threshold": 1000}), 422, "tier-ladder-order"
    )
    invalid = assert_problem(
        api(
            "post",
            "/v1/program/tiers",
            {"code": "Not A Slug", "name": "", "rank": "1", "points_multiplier": "0.9"},
        ),
        422,
        "validation-failed",
    )
    pointers = {e["pointer"] for e in invalid["errors"]}
    assert {"#/code", "#/name", "#/rank", "#/threshold", "#/points_multiplier"} <= pointers
    assert_problem(
        api("patch", "/v1/program/tiers/gold", {"code": "other"}), 422, "validation-failed"
    )
    assert_problem(api("patch", "/v1/program/tiers/nope", {"name": "x"}), 404, "tier-not-found")
    assert_problem(api("delete", "/v1/program/tiers/nope"), 404, "tier-not-found")
    in_use = assert_problem(api("delete", "/v1/program/tiers/bronze"), 409, "tier-in-use")
    assert in_use["members"] == 1


def test_policy(api: Callable[..., Any]) -> None:
    got = api("get", "/v1/program/tier-policy")
    assert got.status_code == 200
    assert {k: got.json[k] for k in ("metric", "window", "grace_days", "downgrade")} == {
        "metric": "points",
        "window": "lifetime",
        "grace_days": 0,
        "downgrade": "one_step",
    }
    patched = api("patch", "/v1/program/tier-policy", {"window": "calendar_year", "grace_days": 30})
    assert patched.status_code == 200
    assert (patched.json["window"], patched.json["grace_days"]) == ("calendar_year", 30)
    assert patched.json["ladder_version"] == got.json["ladder_version"] + 1
    assert patched.json["updated_by"] is not None
    bad = assert_problem(
        api("patch", "/v1/program/tier-policy", {"metric": "karma", "grace_days": -1}),
        422,
        "validation-failed",
    )
    assert {e["pointer"] for e in bad["errors"]} == {"#/metric", "#/grace_days"}


def test_member_tier_progress_and_history(
    api: Callable[..., Any], ladder: None, member_id: str
) -> None:
    order = {"order_id": "T-1", "member_id": member_id, "total": 76000, "currency": "USD"}
    assert api("post", "/v1/orders", order).status_code == 201
    got = api("get", f"/v1/members/{member_id}/tier")
    assert got.status_code == 200
    assert got.json == {
        "member_id": member_id,
        "tier": {
            "code": "silver",
            "name": "Silver",
            "rank": 2,
            "benefits": None,
            "points_multiplier": "1.0000",
        },
        "source": "computed",
        "since": "2026-03-10T12:00:00Z",
        "until": None,
        "reason": None,
        "metric": "points",
        "window": "lifetime",
        "value": 760,
        "progress": {
            "next_tier": {"code": "gold", "name": "Gold"},
            "metric": "points",
            "current": 760,
            "threshold": 1000,
            "remaining": 240,
            "deadline": None,
            "message": "240 more points to Gold",
        },
    }
    member = api("get", f"/v1/members/{member_id}").json
    assert member["tier"] == {"code": "silver", "name": "Silver"}
    page = api("get", f"/v1/members/{member_id}/tier/history")
    assert page.status_code == 200
    [change] = page.json["items"]
    assert {k: change[k] for k in ("kind", "from", "to", "metric_value", "at")} == {
        "kind": "upgrade",
        "from": "bronze",
        "to": "silver",
        "metric_value": 760,
        "at": "2026-03-10T12:00:00Z",
    }
    assert page.json["next_cursor"] is None


def test_calendar_deadline_in_progress(
    api: Callable[..., Any], ladder: None, member_id: str
) -> None:
    api("patch", "/v1/program/tier-policy", {"window": "calendar_year"})
    progress = api("get", f"/v1/members/{member_id}/tier").json["progress"]
    assert progress["deadline"] == "2026-12-31"
    assert progress["message"] == "500 more points to Silver by 31 Dec 2026"


def test_manual_assignment(api: Callable[..., Any], ladder: None, member_id: str) -> None:
    url = f"/v1/members/{member_id}/tier"
    assert_problem(api("delete", url), 409, "no-manual-tier")
    assigned = api(
        "post", url, {"tier": "gold", "reason": "Press", "until": "2026-04-01T00:00:00Z"}
    )
    assert assigned.status_code == 200
    assert (assigned.json["source"], assigned.json["tier"]["code"]) == ("manual", "gold")
    assert (assigned.json["until"], assigned.json["reason"]) == ("2026-04-01T00:00:00Z", "Press")
    assert api("get", f"/v1/members/{member_id}").json["tier"]["code"] == "gold"
    ended = api("delete", url)
    assert ended.status_code == 200
    assert (ended.json["source"], ended.json["tier"]["code"]) == ("computed", "bronze")
    kinds = [c["kind"] for c in api("get", f"{url}/history?limit=1").json["items"]]
    assert kinds == ["manual_ended"]
    audit = api("get", f"/v1/audit?entity_type=member_tier&entity_id={member_id}")
    assert audit.status_code == 200
    assert [(r["action"], r["reason"]) for r in audit.json["items"]] == [
        ("unassigned", None),
        ("assigned", "Press"),
    ]


def test_manual_assignment_problems(api: Callable[..., Any], ladder: None, member_id: str) -> None:
    url = f"/v1/members/{member_id}/tier"
    missing = assert_problem(api("post", url, {"tier": "gold"}), 422, "validation-failed")
    assert {e["pointer"] for e in missing["errors"]} == {"#/reason"}
    past = assert_problem(
        api("post", url, {"tier": "gold", "reason": "x", "until": "2020-01-01T00:00:00Z"}),
        422,
        "validation-failed",
    )
    assert past["errors"][0]["pointer"] == "#/until"
    unknown = assert_problem(
        api("post", url, {"tier": "diamond", "reason": "x"}), 422, "validation-failed"
    )
    assert unknown["errors"][0]["pointer"] == "#/tier"
    for method, path in (
        ("get", "/v1/members/mem_nope/tier"),
        ("post", "/v1/members/mem_nope/tier"),
        ("delete", "/v1/members/mem_nope/tier"),
        ("get", "/v1/members/mem_nope/tier/history"),
    ):
        body = {"tier": "gold", "reason": "x"} if method == "post" else None
        assert_problem(api(method, path, body), 404, "member-not-found")
    assert_problem(api("get", f"{url}/history?cursor=bm9wZQ"), 422, "validation-failed")


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("get", "/v1/program/tiers", "program:read"),
        ("post", "/v1/program/tiers", "program:write"),
        ("get", "/v1/program/tiers/gold", "program:read"),
        ("patch", "/v1/program/tiers/gold", "program:write"),
        ("delete", "/v1/program/tiers/gold", "program:write"),
        ("get", "/v1/program/tier-policy", "program:read"),
        ("patch", "/v1/program/tier-policy", "program:write"),
        ("get", "/v1/members/m/tier", "members:read"),
        ("post", "/v1/members/m/tier", "program:write"),
        ("delete", "/v1/members/m/tier", "program:write"),
        ("get", "/v1/members/m/tier/history", "members:read"),
    ],
)
def test_tokens_and_scopes(
    client: FlaskClient,
    make_headers: Callable[..., Headers],
    method: str,
    path: str,
    scope: str,
) -> None:
    kwargs: dict[str, Any] = {"json": {}} if method in ("post", "patch") else {}
    assert_problem(getattr(client, method)(path, **kwargs), 401, "unauthenticated")
    other = "program:read" if scope != "program:read" else "members:read"
    body = assert_problem(
        getattr(client, method)(path, headers=make_headers(other), **kwargs),
        403,
        "insufficient-scope",
    )
    assert body["required_scope"] == scope
