"""Community over HTTP: every endpoint's statuses and bodies, problems (401, 403, 404, 409,
422) and Idempotency-Key."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.db import get_database
from tests.community.conftest import make_member
from tests.test_problems import assert_problem

Headers = dict[str, str]
Api = Callable[..., Any]
T = TypeVar("T")
WHEN = "2026-03-10T11:00:00Z"


@pytest.fixture
def api(client: FlaskClient, headers: Headers, clock: FrozenClock) -> Api:
    def call(method: str, url: str, body: Any = None, **extra: str) -> Any:
        kwargs: dict[str, Any] = {"headers": {**headers, **extra}}
        if body is not None:
            kwargs["json"] = body
        return getattr(client, method)(url, **kwargs)

    return call


def seed(app: Flask, make: Callable[[Session], T]) -> T:
    with app.app_context():
        session = get_database(app).sessionmaker()
        try:
            return make(session)
        finally:
            session.close()


@pytest.fixture
def member_id(app: Flask, clock: FrozenClock) -> str:
    return seed(app, lambda session: make_member(session, timezone="Europe/Paris"))


@pytest.fixture
def programme(api: Api) -> dict[str, Any]:
    """Types review.posted and recycling.dropped_off (co2_kg), rules, and a review badge."""
    assert api("post", "/v1/program/event-types", {"name": "review.posted"}).status_code == 201
    recycling = {
        "name": "recycling.dropped_off",
        "description": "Bottles returned",
        "properties": {
            "co2_kg": {"type": "number", "required": True},
            "site": {"type": "string"},
        },
    }
    assert api("post", "/v1/program/event-types", recycling).status_code == 201
    rule = api(
        "post",
        "/v1/program/event-rules",
        {"event_type": "review.posted", "points": 10, "cap": 5, "cap_period": "month"},
    )
    assert rule.status_code == 201, rule.json
    per_kg = {
        "event_type": "recycling.dropped_off",
        "per_unit_property": "co2_kg",
        "points_per_unit": "2",
    }
    assert api("post", "/v1/program/event-rules", per_kg).status_code == 201
    badge = api(
        "post",
        "/v1/program/badges",
        {
            "name": "Reviewer",
            "rule": "event_count",
            "event_type": "review.posted",
            "levels": [
                {"name": "bronze", "threshold": 1, "bonus_points": 5},
                {"name": "silver", "threshold": 3, "bonus_points": 15},
            ],
        },
    )
    assert badge.status_code == 201, badge.json
    return {"rule": rule.json, "badge": badge.json}


def event(member_id: str, event_id: str = "ev-1", **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "member_id": member_id,
        "type": "review.posted",
        "occurred_at": WHEN,
        **extra,
    }


# --- configuration --------------------------------------------------------------------------


def test_event_type_crud(api: Api) -> None:
    body = {"name": "check_in", "properties": {"mood": {"type": "string"}}}
    created = api("post", "/v1/program/event-types", body)
    assert created.status_code == 201
    assert created.json == {
        "name": "check_in",
        "description": None,
        "properties": {"mood": {"type": "string", "required": False}},
        "created_at": "2026-03-10T12:00:00Z",
        "updated_at": "2026-03-10T12:00:00Z",
    }
    assert_problem(api("post", "/v1/program/event-types", body), 409, "event-type-exists")
    url = "/v1/program/event-types/check_in"
    assert api("get", url).json["name"] == "check_in"
    patched = api("patch", url, {"description": "Daily visit"})
    assert (patched.status_code, patched.json["description"]) == (200, "Daily visit")
    page = api("get", "/v1/program/event-types?limit=1").json
    assert [t["name"] for t in page["items"]] == ["check_in"] and page["next_cursor"] is None
    audit = api("get", "/v1/audit?entity_type=event_type&entity_id=check_in")
    assert [r["action"] for r in audit.json["items"]] == ["updated", "created"]
    assert api("delete", url).status_code == 204
    assert_problem(api("get", url), 404, "event-type-not-found")
    assert_problem(api("patch", url, {"description": "x"}), 404, "event-type-not-found")
    assert_problem(api("delete", url), 404, "event-type-not-found")


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"name": "Review Posted"}, "#/name"),
        ({"name": "review."}, "#/name"),
        ({}, "#/name"),
        # A mapping's keys are the client's: errors point at the mapping.
        ({"name": "a", "properties": {"x": {"type": "date"}}}, "#/properties"),
        ({"name": "a", "properties": {"X-y": {"type": "string"}}}, "#/properties"),
    ],
)
def test_event_type_validation(api: Api, body: dict[str, Any], pointer: str) -> None:
    problem = assert_problem(api("post", "/v1/program/event-types", body), 422, "validation-failed")
    assert pointer in [e["pointer"] for e in problem["errors"]], problem


def test_event_type_in_use_is_409(api: Api, programme: dict[str, Any]) -> None:
    assert_problem(api("delete", "/v1/program/event-types/review.posted"), 409, "event-type-in-use")


def test_event_rule_crud(api: Api, programme: dict[str, Any]) -> None:
    rule = programme["rule"]
    assert rule["id"].startswith("evr_")
    assert {
        k: rule[k]
        for k in (
            "event_type",
            "points",
            "per_unit_property",
            "points_per_unit",
            "cap",
            "cap_period",
            "active",
        )
    } == {
        "event_type": "review.posted",
        "points": 10,
        "per_unit_property": None,
        "points_per_unit": None,
        "cap": 5,
        "cap_period": "month",
        "active": True,
    }
    url = f"/v1/program/event-rules/{rule['id']}"
    assert api("get", url).json["points"] == 10
    assert api("patch", url, {"points": 12}).json["points"] == 12
    assert len(api("get", "/v1/program/event-rules").json["items"]) == 2
    again = api("post", "/v1/program/event-rules", {"event_type": "review.posted", "points": 1})
    assert_problem(again, 409, "event-rule-exists")
    unknown = api("post", "/v1/program/event-rules", {"event_type": "nope", "points": 1})
    problem = assert_problem(unknown, 422, "unknown-event-type")
    assert problem["errors"][0]["pointer"] == "#/event_type"
    bad = api("post", "/v1/program/event-rules", {"event_type": "review.posted", "points": -1})
    assert_problem(bad, 422, "validation-failed")
    audit = api("get", f"/v1/audit?entity_type=event_rule&entity_id={rule['id']}")
    assert [r["action"] for r in audit.json["items"]] == ["updated", "created"]
    assert api("delete", url).status_code == 204
    assert_problem(api("get", url), 404, "event-rule-not-found")
    assert_problem(api("delete", url), 404, "event-rule-not-found")


def test_badge_crud(api: Api, programme: dict[str, Any]) -> None:
    badge = programme["badge"]
    assert badge["id"].startswith("bdg_")
    assert badge["levels"] == [
        {"name": "bronze", "threshold": "1", "bonus_points": 5},
        {"name": "silver", "threshold": "3", "bonus_points": 15},
    ]
    url = f"/v1/program/badges/{badge['id']}"
    assert api("get", url).json["name"] == "Reviewer"
    patched = api("patch", url, {"active": False, "ends_at": "2026-12-01T00:00:00+01:00"})
    assert (patched.json["active"], patched.json["ends_at"]) == (False, "2026-11-30T23:00:00Z")
    assert api("get", "/v1/program/badges?active=true").json["items"] == []
    problem = assert_problem(
        api(
            "patch", url, {"levels": [{"name": "a", "threshold": 2}, {"name": "b", "threshold": 1}]}
        ),
        422,
        "validation-failed",
    )
    assert problem["errors"][0]["pointer"] == "#/levels"
    audit = api("get", f"/v1/audit?entity_type=badge&entity_id={badge['id']}")
    assert [r["action"] for r in audit.json["items"]] == ["updated", "created"]
    assert api("delete", url).status_code == 204
    assert_problem(api("get", url), 404, "badge-not-found")
    assert_problem(api("patch", url, {"name": "x"}), 404, "badge-not-found")
    assert_problem(api("delete", url), 404, "badge-not-found")


def test_badge_validation(api: Api, programme: dict[str, Any]) -> None:
    base = {"name": "x", "levels": [{"name": "a", "threshold": 1}]}
    assert_problem(
        api("post", "/v1/program/badges", {**base, "rule": "karma"}), 422, "validation-failed"
    )
    problem = assert_problem(
        api(
            "post",
            "/v1/program/badges",
            {
                **base,
                "rule": "property_sum",
                "event_type": "recycling.dropped_off",
                "property": "site",
            },
        ),
        422,
        "invalid-event-property",
    )
    assert problem["errors"][0]["pointer"] == "#/property"
    assert_problem(
        api("post", "/v1/program/badges", {**base, "rule": "spend", "levels": []}),
        422,
        "validation-failed",
    )


def test_awarded_badge_delete_is_409(api: Api, programme: dict[str, Any], member_id: str) -> None:
    assert api("post", "/v1/events", event(member_id)).status_code == 201
    url = f"/v1/program/badges/{programme['badge']['id']}"
    assert_problem(api("delete", url), 409, "badge-in-use")


def test_settings(api: Api) -> None:
    assert api("get", "/v1/program/community-settings").json["streak_grace_days"] == 0
    patched = api("patch", "/v1/program/community-settings", {"streak_grace_days": 2})
    assert (patched.status_code, patched.json["streak_grace_days"]) == (200, 2)
    assert_problem(
        api("patch", "/v1/program/community-settings", {"streak_grace_days": 9}),
        422,
        "validation-failed",
    )


# --- events ---------------------------------------------------------------------------------


def test_post_an_event(api: Api, programme: dict[str, Any], member_id: str) -> None:
    created = api("post", "/v1/events", event(member_id))
    assert created.status_code == 201, created.json
    body = created.json
    assert body["id"].startswith("evt_")
    assert {
        k: body[k]
        for k in (
            "event_id",
            "member_id",
            "type",
            "occurred_at",
            "properties",
            "points",
            "streak",
            "balance",
        )
    } == {
        "event_id": "ev-1",
        "member_id": member_id,
        "type": "review.posted",
        "occurred_at": WHEN,
        "properties": {},
        "points": 10,
        "streak": None,
        "balance": {"available": 15, "pending": 0, "held": 0},
    }
    [award] = body["badges"]
    assert {k: award[k] for k in ("badge_id", "name", "level", "level_name", "points")} == {
        "badge_id": programme["badge"]["id"],
        "name": "Reviewer",
        "level": 1,
        "level_name": "bronze",
        "points": 5,
    }
    again = api("post", "/v1/events", event(member_id))
    assert (again.status_code, again.json) == (200, body)
    other = api("post", "/v1/events", event(member_id, occurred_at="2026-03-09T11:00:00Z"))
    assert_problem(other, 409, "event-conflict")
    recycled = api(
        "post",
        "/v1/events",
        event(
            member_id,
            "ev-2",
            type="recycling.dropped_off",
            properties={"co2_kg": 2.5, "site": "Depot"},
        ),
    )
    assert (recycled.status_code, recycled.json["points"]) == (201, 5)


def test_event_with_idempotency_key(api: Api, programme: dict[str, Any], member_id: str) -> None:
    first = api("post", "/v1/events", event(member_id), **{"Idempotency-Key": "k1"})
    again = api("post", "/v1/events", event(member_id), **{"Idempotency-Key": "k1"})
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.data == first.data and again.headers["Idempotent-Replayed"] == "true"
    other = api("post", "/v1/events", event(member_id, "ev-9"), **{"Idempotency-Key": "k1"})
    assert_problem(other, 422, "idempotency-key-reused")


@pytest.mark.parametrize(
    ("changes", "status", "code", "pointer"),
    [
        ({"type": "nope"}, 422, "unknown-event-type", "#/type"),
        ({"type": "recycling.dropped_off"}, 422, "invalid-event-property", "#/properties/co2_kg"),
        (
            {"type": "recycling.dropped_off", "properties": {"co2_kg": "lots"}},
            422,
            "invalid-event-property",
            "#/properties/co2_kg",
        ),
        # an undeclared property is not named back
        ({"properties": {"stars": 5}}, 422, "invalid-event-property", "#/properties"),
        ({"occurred_at": "2026-03-10T12:06:00Z"}, 422, "event-in-future", "#/occurred_at"),
        ({"occurred_at": "2026-03-10T12:00:00"}, 422, "validation-failed", "#/occurred_at"),
        ({"event_id": ""}, 422, "validation-failed", "#/event_id"),
        ({"member_id": "mem_nobody"}, 404, "member-not-found", None),
    ],
)
def test_event_problems(
    api: Api,
    programme: dict[str, Any],
    member_id: str,
    changes: dict[str, Any],
    status: int,
    code: str,
    pointer: str | None,
) -> None:
    problem = assert_problem(
        api("post", "/v1/events", {**event(member_id), **changes}), status, code
    )
    if pointer:
        assert pointer in [e["pointer"] for e in problem["errors"]], problem


def test_events_need_points_accrue(
    client: FlaskClient, make_headers: Callable[..., Headers], member_id: str
) -> None:
    assert_problem(client.post("/v1/events", json=event(member_id)), 401, "unauthenticated")
    forbidden = client.post(
        "/v1/events", json=event(member_id), headers=make_headers("members:write", "program:write")
    )
    assert_problem(forbidden, 403, "insufficient-scope")
    reader = make_headers("members:read")
    assert_problem(
        client.post("/v1/program/badges", json={}, headers=reader), 403, "insufficient-scope"
    )


def test_check_ins(api: Api, member_id: str, clock: FrozenClock) -> None:
    assert api("post", "/v1/program/event-types", {"name": "check_in"}).status_code == 201
    rule = {"event_type": "check_in", "points": 3}
    assert api("post", "/v1/program/event-rules", rule).status_code == 201
    url = f"/v1/members/{member_id}/check-ins"
    first = api("post", url, {})
    assert first.status_code == 201, first.json
    assert (first.json["type"], first.json["points"]) == ("check_in", 3)
    assert first.json["streak"] == {"current": 1, "longest": 1, "counted": True}
    same = api("post", url, {"event_id": "chk-2"})
    assert (same.status_code, same.json["points"]) == (201, 0)
    assert same.json["streak"] == {"current": 1, "longest": 1, "counted": False}
    replay = api("post", url, {"event_id": "chk-2"})
    assert (replay.status_code, replay.json) == (200, same.json)
    clock.advance(dt.timedelta(days=1))
    next_day = api("post", url, {"occurred_at": "2026-03-11T11:00:00Z"})
    assert next_day.json["streak"] == {"current": 2, "longest": 2, "counted": True}
    assert next_day.json["balance"]["available"] == 6
    assert_problem(api("post", "/v1/members/mem_nobody/check-ins", {}), 404, "member-not-found")


# --- the member's view and leaderboards -----------------------------------------------------


def test_member_badges(api: Api, programme: dict[str, Any], member_id: str) -> None:
    api("post", "/v1/events", event(member_id))
    view = api("get", f"/v1/members/{member_id}/badges")
    assert view.status_code == 200
    [earned] = view.json["earned"]
    assert {
        k: earned[k]
        for k in ("badge_id", "level", "level_name", "points", "awarded_at", "revoked_at")
    } == {
        "badge_id": programme["badge"]["id"],
        "level": 1,
        "level_name": "bronze",
        "points": 5,
        "awarded_at": "2026-03-10T12:00:00Z",
        "revoked_at": None,
    }
    assert view.json["progress"] == [
        {
            "badge_id": programme["badge"]["id"],
            "name": "Reviewer",
            "rule": "event_count",
            "value": "1",
            "level": 1,
            "next_level": {
                "level": 2,
                "name": "silver",
                "threshold": "3",
                "remaining": "2",
                "bonus_points": 15,
            },
        }
    ]
    assert_problem(api("get", "/v1/members/mem_nobody/badges"), 404, "member-not-found")


def test_leaderboard(api: Api, app: Flask, programme: dict[str, Any], member_id: str) -> None:
    other = seed(app, lambda session: make_member(session))
    for who, count in ((member_id, 2), (other, 1)):
        for i in range(count):
            assert api("post", "/v1/events", event(who, f"{who}-{i}")).status_code == 201
    profile = f"/v1/members/{member_id}/leaderboard-profile"
    assert api("get", profile).json == {
        "member_id": member_id,
        "opted_in": False,
        "display_name": None,
    }
    put = api("put", profile, {"opted_in": True, "display_name": "Zoé"})
    assert put.json == {"member_id": member_id, "opted_in": True, "display_name": "Zoé"}
    api(
        "put", f"/v1/members/{other}/leaderboard-profile", {"opted_in": True, "display_name": "Max"}
    )
    url = f"/v1/program/badges/{programme['badge']['id']}/leaderboard"
    board = api("get", url)
    assert board.status_code == 200
    assert board.json == {
        "items": [
            {"rank": 1, "display_name": "Zoé", "value": "2"},
            {"rank": 2, "display_name": "Max", "value": "1"},
        ]
    }
    assert len(api("get", url + "?limit=1").json["items"]) == 1
    assert_problem(api("get", url + "?limit=0"), 422, "validation-failed")
    assert_problem(api("get", "/v1/program/badges/bdg_nope/leaderboard"), 404, "badge-not-found")
    problem = assert_problem(api("put", profile, {"opted_in": True}), 422, "validation-failed")
    assert problem["errors"][0]["pointer"] == "#/display_name"
    assert_problem(
        api("put", "/v1/members/mem_nobody/leaderboard-profile", {"opted_in": False}),
        404,
        "member-not-found",
    )
