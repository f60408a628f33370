"""Member calls over HTTP: statuses, bodies and validation of every field."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.test_problems import assert_problem

MEMBER_KEYS = {
    "id",
    "external_id",
    "email",
    "name",
    "birthday",
    "timezone",
    "status",
    "tier",
    "points",
    "referral_code",
    "referrer_id",
    "marketing_consent",
    "metadata",
    "enrolled_at",
    "created_at",
    "updated_at",
}


def enroll(client: FlaskClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post("/v1/members", json=body, headers=headers)
    assert response.status_code in (200, 201), response.json
    assert response.json is not None
    return response.json


def test_enrol_returns_the_member_contract(client: FlaskClient, headers: dict[str, str]) -> None:
    response = client.post(
        "/v1/members",
        json={
            "external_id": "shop-42",
            "email": "Ada@Example.com",
            "name": "Ada Lovelace",
            "birthday": "1985-12-10",
            "timezone": "Europe/London",
            "marketing_consent": True,
            "enrolled_at": "2024-01-31T09:30:00+01:00",
            "metadata": {"device_id": "d-1"},
        },
        headers=headers,
    )
    assert response.status_code == 201
    member = response.json
    assert member is not None
    assert set(member) == MEMBER_KEYS
    assert member["email"] == "ada@example.com"
    assert member["enrolled_at"] == "2024-01-31T08:30:00Z"
    assert member["points"] == {"available": 0, "pending": 0, "held": 0, "lifetime_earned": 0}
    assert member["tier"] is None
    assert member["metadata"] == {"device_id": "d-1"}

    again = client.post("/v1/members", json={"external_id": "shop-42"}, headers=headers)
    assert again.status_code == 200
    assert again.json == member


def test_get_lookup_and_update(client: FlaskClient, headers: dict[str, str]) -> None:
    member = enroll(client, headers, external_id="shop-1", name="Grace")
    got = client.get(f"/v1/members/{member['id']}", headers=headers)
    assert got.status_code == 200 and got.json == member

    page = client.get("/v1/members?external_id=shop-1", headers=headers).json
    assert page == {"items": [member], "next_cursor": None}
    empty = client.get("/v1/members?external_id=unknown", headers=headers)
    assert empty.status_code == 200
    assert empty.json == {"items": [], "next_cursor": None}

    patched = client.patch(
        f"/v1/members/{member['id']}",
        json={"name": "Grace Hopper", "timezone": "America/New_York", "status": "suspended"},
        headers=headers,
    )
    assert patched.status_code == 200
    assert patched.json is not None
    assert (patched.json["name"], patched.json["timezone"], patched.json["status"]) == (
        "Grace Hopper",
        "America/New_York",
        "suspended",
    )
    assert patched.json["external_id"] == "shop-1"


def test_unknown_member_is_404(client: FlaskClient, headers: dict[str, str]) -> None:
    body = assert_problem(
        client.get("/v1/members/mem_missing", headers=headers), 404, "member-not-found"
    )
    assert body["member_id"] == "mem_missing"
    assert_problem(
        client.patch("/v1/members/mem_missing", json={"name": "x"}, headers=headers),
        404,
        "member-not-found",
    )


def test_closed_member_cannot_be_reopened(client: FlaskClient, headers: dict[str, str]) -> None:
    member = enroll(client, headers, external_id="shop-1")
    url = f"/v1/members/{member['id']}"
    assert client.patch(url, json={"status": "closed"}, headers=headers).status_code == 200
    assert_problem(
        client.patch(url, json={"status": "active"}, headers=headers), 409, "member-closed"
    )


def test_referral_code_at_enrolment(client: FlaskClient, headers: dict[str, str]) -> None:
    referrer = enroll(client, headers, external_id="shop-1")
    referee = enroll(client, headers, external_id="shop-2", referral_code=referrer["referral_code"])
    assert referee["referrer_id"] == referrer["id"]
    response = client.post(
        "/v1/members", json={"external_id": "shop-3", "referral_code": "ZZZZZZZZ"}, headers=headers
    )
    body = assert_problem(response, 422, "validation-failed")
    assert body["errors"] == [
        {"pointer": "#/referral_code", "detail": "No member has this referral code."}
    ]


TOMORROW = (dt.date.today() + dt.timedelta(days=1)).isoformat()
NEXT_YEAR = (dt.date.today() + dt.timedelta(days=365)).isoformat() + "T00:00:00Z"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("external_id", ""),
        ("external_id", "   "),
        ("external_id", "x" * 129),
        ("external_id", "tab\there"),
        ("external_id", 42),
        ("email", "not-an-email"),
        ("email", "a@" + "b" * 250 + ".com"),
        ("name", ""),
        ("name", "n" * 201),
        ("birthday", "1985-13-01"),
        ("birthday", TOMORROW),
        ("birthday", "1850-01-01"),
        ("timezone", "Mars/Base"),
        ("timezone", "+02:00"),
        ("marketing_consent", "maybe"),
        ("enrolled_at", "2024-01-01T10:00:00"),
        ("enrolled_at", "yesterday"),
        ("enrolled_at", NEXT_YEAR),
        ("metadata", "flat"),
        ("metadata", {f"k{i}": i for i in range(51)}),
        ("metadata", {"blob": "x" * 5000}),
        ("referral_code", ""),
        ("unknown_field", 1),
    ],
)
def test_enrol_validates_every_field(
    client: FlaskClient, headers: dict[str, str], field: str, value: Any
) -> None:
    body: dict[str, Any] = {"external_id": "shop-1", field: value}
    response = client.post("/v1/members", json=body, headers=headers)
    problem = assert_problem(response, 422, "validation-failed")
    pointer = "#" if field == "unknown_field" else f"#/{field}"  # unknown fields are not named
    assert {e["pointer"] for e in problem["errors"]} == {pointer}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", "deleted"),
        ("timezone", "Nowhere/City"),
        ("external_id", "changed"),
        ("email", "nope"),
        ("birthday", TOMORROW),
    ],
)
def test_update_validates(
    client: FlaskClient, headers: dict[str, str], field: str, value: Any
) -> None:
    member = enroll(client, headers, external_id="shop-1")
    response = client.patch(f"/v1/members/{member['id']}", json={field: value}, headers=headers)
    problem = assert_problem(response, 422, "validation-failed")
    pointer = "#" if field == "external_id" else f"#/{field}"  # not a field of an update
    assert {e["pointer"] for e in problem["errors"]} == {pointer}


def test_list_pages_through_everyone(client: FlaskClient, headers: dict[str, str]) -> None:
    ids = [enroll(client, headers, external_id=f"shop-{i}")["id"] for i in range(5)]
    seen: list[str] = []
    url = "/v1/members?limit=2"
    while url:
        page = client.get(url, headers=headers).json
        assert page is not None
        assert len(page["items"]) <= 2
        seen += [m["id"] for m in page["items"]]
        url = f"/v1/members?limit=2&cursor={page['next_cursor']}" if page["next_cursor"] else ""
    assert seen == sorted(ids)


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=abc",
        "cursor=%%%",
        "cursor=e30",
        "status=gone",
        "enrolled_after=yesterday",
    ],
)
def test_list_rejects_bad_parameters(
    client: FlaskClient, headers: dict[str, str], query: str
) -> None:
    response = client.get(f"/v1/members?{query}", headers=headers)
    problem = assert_problem(response, 422, "validation-failed")
    assert problem["errors"][0]["parameter"] == query.split("=")[0]
