"""End to end, as a storefront does it, on PostgreSQL and on SQLite: client, token, enrol,
look up, update, list."""

from __future__ import annotations

import json

from flask import Flask

from loyalty.cli import main


def test_storefront_member_flow(e2e_app: Flask) -> None:
    runner = e2e_app.test_cli_runner()
    result = runner.invoke(
        main,
        [
            "clients",
            "create",
            "Shop",
            "--scope",
            "members:read",
            "--scope",
            "members:write",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    credentials = json.loads(result.output)
    http = e2e_app.test_client()

    token = http.post(
        "/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": credentials["client_id"],
            "client_secret": credentials["client_secret"],
        },
    )
    assert token.status_code == 200
    auth = {"Authorization": f"Bearer {token.json['access_token']}"}  # type: ignore[index]

    enrolled = http.post(
        "/v1/members",
        json={"external_id": "cust-1", "email": "ada@example.com", "timezone": "Europe/London"},
        headers=auth,
    )
    assert enrolled.status_code == 201
    member = enrolled.json
    assert member is not None
    again = http.post("/v1/members", json={"external_id": "cust-1"}, headers=auth)
    assert (again.status_code, again.json) == (200, member)

    friend = http.post(
        "/v1/members",
        json={"external_id": "cust-2", "referral_code": member["referral_code"]},
        headers=auth,
    ).json
    assert friend is not None and friend["referrer_id"] == member["id"]

    found = http.get("/v1/members?external_id=cust-1", headers=auth).json
    assert found == {"items": [member], "next_cursor": None}

    updated = http.patch(
        f"/v1/members/{member['id']}", json={"name": "Ada", "marketing_consent": True}, headers=auth
    ).json
    assert updated is not None
    assert (updated["name"], updated["marketing_consent"]) == ("Ada", True)
    assert http.get(f"/v1/members/{member['id']}", headers=auth).json == updated

    first = http.get("/v1/members?limit=1", headers=auth).json
    assert first is not None and first["next_cursor"]
    second = http.get(f"/v1/members?limit=1&cursor={first['next_cursor']}", headers=auth).json
    assert second is not None
    assert [first["items"][0]["id"], second["items"][0]["id"]] == sorted(
        [member["id"], friend["id"]]
    )
    assert second["next_cursor"] is None

    result = runner.invoke(main, ["clients", "revoke", credentials["client_id"]])
    assert result.exit_code == 0
    refused = http.get(f"/v1/members/{member['id']}", headers=auth)
    assert refused.status_code == 401
    assert refused.json is not None and refused.json["code"] == "token-revoked"


def test_errors_are_problems_on_every_backend(e2e_app: Flask) -> None:
    http = e2e_app.test_client()
    assert http.get("/v1/members").status_code == 401
    missing = http.get("/v1/nope")
    assert missing.status_code == 404 and missing.mimetype == "application/problem+json"
    assert http.get("/v1/health").json == {"status": "ok", "database": "ok"}
