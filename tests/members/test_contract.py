"""The member calls' contract says what the server enforces (findings of the schemathesis
run): each body here is accepted by both or refused by both."""

from __future__ import annotations

import zoneinfo
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from loyalty.members import rules
from tests.contract import accepts, assert_agree, query_schema

BASE = {"external_id": "cust-contract"}


@pytest.mark.parametrize(
    ("changes", "valid"),
    [
        # Time zones: the tzdata package's names, as listed in the spec, nothing else.
        ({"timezone": ""}, False),
        ({"timezone": "Mars/Olympus_Mons"}, False),
        ({"timezone": "localtime"}, False),  # a system alias, machine-dependent
        ({"timezone": "America/Argentina/Buenos_Aires"}, True),
        ({"timezone": "Etc/GMT+1"}, True),
        # Text: no control characters (C0, DEL, C1); not blank where required.
        ({"external_id": "   "}, False),
        ({"external_id": "cust\u0085"}, False),
        ({"external_id": "cust\u00a0contract", "name": "Ada\u3000Lovelace"}, True),
        # Birthdays from 1900.
        ({"birthday": "1899-12-31"}, False),
        ({"birthday": "1900-01-01"}, True),
        # Metadata: 1 to 64 character keys, at most 50 of them.
        ({"metadata": {"": "x"}}, False),
        ({"metadata": {"k" * 65: "x"}}, False),
        ({"metadata": {f"k{i}": i for i in range(51)}}, False),
        ({"metadata": {f"k{i}": i for i in range(50)}}, True),
        # Timestamps: RFC 3339, years 1900 to 9998 as written.
        ({"enrolled_at": "0213-08-27T04:48:26-00:26"}, False),
        ({"enrolled_at": "2026-01-01T00:00:60Z"}, False),
        ({"enrolled_at": "1900-01-01T00:00:00+01:00"}, False),  # 1899 in UTC
        ({"enrolled_at": "1900-01-01T00:00:00Z"}, True),
        ({"enrolled_at": "2026-01-01T10:00:00.123456789+05:30"}, True),
    ],
)
def test_enrolment_contract(
    app: Flask,
    client: FlaskClient,
    headers: dict[str, str],
    changes: dict[str, Any],
    valid: bool,
) -> None:
    assert_agree(app, client, headers, "POST", "/v1/members", {**BASE, **changes}, valid=valid)


@pytest.mark.parametrize(
    ("changes", "valid"),
    [
        ({"timezone": ""}, False),
        ({"timezone": "Asia/Tokyo"}, True),
        ({"name": "\t"}, False),
        ({"status": "gone"}, False),
    ],
)
def test_update_contract(
    app: Flask,
    client: FlaskClient,
    headers: dict[str, str],
    changes: dict[str, Any],
    valid: bool,
) -> None:
    member = client.post("/v1/members", json=BASE, headers=headers).json
    assert member is not None
    url = f"/v1/members/{member['id']}"
    assert_agree(
        app, client, headers, "PATCH", "/v1/members/{member_id}", changes, valid=valid, url=url
    )


def test_the_spec_lists_the_time_zones_the_server_accepts(app: Flask) -> None:
    schema = query_schema(app, "GET", "/v1/members", "limit")  # for the components
    zones = schema["components"]["schemas"]["TimeZone"]["enum"]
    assert zones == sorted(rules.time_zones())
    assert len(set(schema["components"]["schemas"]["TimeZone"]["x-enum-varnames"])) == len(zones)
    for zone in zones:
        zoneinfo.ZoneInfo(zone)  # every one of them loads


@pytest.mark.parametrize(
    ("cursor", "valid"), [("", False), ("%%%", False), ("eyJhZnRlciI6IjAifQ", True)]
)
def test_cursor_contract(
    app: Flask, client: FlaskClient, headers: dict[str, str], cursor: str, valid: bool
) -> None:
    assert accepts(query_schema(app, "GET", "/v1/members", "cursor"), cursor) is valid
    response = client.get("/v1/members", query_string={"cursor": cursor}, headers=headers)
    assert (response.status_code == 422) is not valid, response.json
