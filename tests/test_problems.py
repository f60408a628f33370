"""Every error is an RFC 9457 problem: never HTML, never a leaked internal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from marshmallow import Schema, ValidationError, fields, validate
from werkzeug.test import TestResponse

from loyalty import create_app, problems
from loyalty.db import get_database
from tests.conftest import base_config

PROBLEM_MEMBERS = {"type", "code", "title", "status", "detail", "instance"}


def assert_problem(response: TestResponse, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.data
    assert response.mimetype == "application/problem+json"
    body = response.json
    assert body is not None
    assert PROBLEM_MEMBERS <= set(body)
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].startswith("https://") and body["type"].endswith("/" + code)
    return body


def test_unknown_route(client: FlaskClient) -> None:
    body = assert_problem(client.get("/v1/nowhere"), 404, "not-found")
    assert body["instance"] == "/v1/nowhere"


def test_wrong_method_lists_the_allowed_ones(client: FlaskClient) -> None:
    response = client.delete("/v1/members")
    assert_problem(response, 405, "method-not-allowed")
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "POST"}


def test_malformed_json(client: FlaskClient, headers: dict[str, str]) -> None:
    response = client.post(
        "/v1/members", data="{not json", content_type="application/json", headers=headers
    )
    assert_problem(response, 400, "malformed-json")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "application/x-www-form-urlencoded"]
)
def test_wrong_content_type(
    client: FlaskClient, headers: dict[str, str], content_type: str
) -> None:
    response = client.post(
        "/v1/members", data="external_id=1", content_type=content_type, headers=headers
    )
    body = assert_problem(response, 415, "unsupported-media-type")
    assert content_type in body["detail"]


def test_oversized_body(client: FlaskClient, headers: dict[str, str]) -> None:
    payload = '{"external_id": "' + "x" * (1024 * 1024) + '"}'
    response = client.post(
        "/v1/members", data=payload, content_type="application/json", headers=headers
    )
    body = assert_problem(response, 413, "payload-too-large")
    assert "1048576" in body["detail"]


def test_body_that_is_not_an_object(client: FlaskClient, headers: dict[str, str]) -> None:
    response = client.post("/v1/members", json=[1, 2], headers=headers)
    body = assert_problem(response, 422, "validation-failed")
    assert body["errors"][0]["pointer"] == "#"


def test_validation_errors_point_at_each_field(
    client: FlaskClient, headers: dict[str, str]
) -> None:
    response = client.post(
        "/v1/members",
        json={"email": "nope", "metadata": {"k": 1}, "color": "red"},
        headers=headers,
    )
    body = assert_problem(response, 422, "validation-failed")
    pointers = {e["pointer"]: e["detail"] for e in body["errors"]}
    assert set(pointers) == {"#/external_id", "#/email", "#"}
    assert pointers["#/external_id"] == "Missing data for required field."
    # An unknown field is counted where it is, never named: the client's keys are not echoed.
    assert pointers["#"].startswith("1 unknown field; the fields allowed here are: birthday, ")
    assert "color" not in response.get_data(as_text=True)


def test_unknown_nested_fields_are_reported_at_their_object(
    client: FlaskClient, headers: dict[str, str]
) -> None:
    order = {
        "order_id": "o-1",
        "member_id": "mem_x",
        "total": 100,
        "currency": "USD",
        "items": [
            {"sku": "a", "quantity": 1, "unit_price": 100},
            {"sku": "b", "quantity": 1, "unit_price": 100, "colour": "red", "size": "L"},
        ],
        "coupon": "SAVE10",
    }
    response = client.post("/v1/orders", json=order, headers=headers)
    body = assert_problem(response, 422, "validation-failed")
    pointers = {e["pointer"]: e["detail"] for e in body["errors"]}
    assert set(pointers) == {"#", "#/items/1"}
    assert pointers["#/items/1"].startswith("2 unknown fields; the fields allowed here are: ")
    for sent in ("colour", "size", "coupon", "SAVE10"):
        assert sent not in response.get_data(as_text=True)


def test_a_mappings_keys_are_not_echoed(client: FlaskClient, headers: dict[str, str]) -> None:
    properties = {"Secret-Key-123": {"type": "string"}, "ok": {"type": "when"}}
    response = client.post(
        "/v1/program/event-types", json={"name": "a.b", "properties": properties}, headers=headers
    )
    body = assert_problem(response, 422, "validation-failed")
    assert {e["pointer"] for e in body["errors"]} == {"#/properties"}
    details = sorted(e["detail"] for e in body["errors"])
    assert details[0].startswith("A key: ")
    assert details[1].startswith("A value's type: Must be one of: ")
    assert "Secret-Key-123" not in response.get_data(as_text=True)


class EchoingSchema(Schema):
    code = fields.String(validate=lambda value: value == "ok" or _refuse(f"{value!r} is bad."))
    tags = fields.List(fields.String(validate=validate.Length(max=3)))


def _refuse(message: str) -> bool:
    raise ValidationError(message)


def test_a_detail_quoting_the_value_sent_is_replaced() -> None:
    sent = {"code": "hunter2-secret", "tags": ["abc", "toolong"]}
    with pytest.raises(ValidationError) as raised:
        EchoingSchema().load(sent)
    errors = list(problems._field_errors({"json": raised.value.messages}, EchoingSchema(), sent))
    assert errors == [
        {"pointer": "#/code", "detail": "Invalid value."},
        {"pointer": "#/tags/1", "detail": "Longer than maximum length 3."},
    ]


def test_query_validation_errors_name_the_parameter(
    client: FlaskClient, headers: dict[str, str]
) -> None:
    response = client.get("/v1/members?limit=0&status=gone", headers=headers)
    body = assert_problem(response, 422, "validation-failed")
    by_parameter = {e["parameter"]: e for e in body["errors"]}
    assert set(by_parameter) == {"limit", "status"}
    assert by_parameter["limit"]["in"] == "query"
    assert by_parameter["limit"]["pointer"] == "#/limit"


@pytest.fixture
def fragile_app(database_url: str) -> Iterator[Flask]:
    """An app that does not propagate exceptions, as in production, with a failing route."""
    app = create_app({**base_config(database_url), "PROPAGATE_EXCEPTIONS": False})

    @app.get("/v1/boom")
    def boom() -> str:
        raise RuntimeError("SELECT secret FROM internals")

    yield app
    get_database(app).engine.dispose()


def test_unexpected_errors_are_generic_500s_without_internals(fragile_app: Flask) -> None:
    response = fragile_app.test_client().get("/v1/boom")
    body = assert_problem(response, 500, "internal-error")
    assert "secret" not in response.get_data(as_text=True)
    assert "Traceback" not in body["detail"]


def test_unreachable_database_is_a_503(tmp_path: object) -> None:
    app = create_app(
        {
            **base_config("postgresql://postgres@127.0.0.1:1/none"),
            "PROPAGATE_EXCEPTIONS": False,
        }
    )
    response = app.test_client().get("/v1/health")
    get_database(app).engine.dispose()
    assert_problem(response, 503, "service-unavailable")
    assert response.headers["Retry-After"] == "1"


def test_health(client: FlaskClient) -> None:
    response = client.get("/v1/health")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "database": "ok"}


# --- hostile input: always a 4xx problem, never a 500 or a stored oddity --------------------

HOSTILE_BODIES = [
    ("deep nesting", "[" * 100_000 + "]" * 100_000),
    ("huge integer", '{"external_id": ' + "9" * 5000 + "}"),
    ("NaN", '{"external_id": "x", "metadata": {"k": NaN}}'),
    ("Infinity", '{"external_id": "x", "metadata": {"k": Infinity}}'),
    ("float overflow", '{"external_id": "x", "metadata": {"k": 1e400}}'),
    ("NUL in a value", '{"external_id": "x", "metadata": {"k": "a\\u0000"}}'),
    ("NUL in a key", '{"external_id": "x", "metadata": {"a\\u0000": 1}}'),
    ("lone surrogate", '{"external_id": "x\\ud800"}'),
    ("not UTF-8", b'{"external_id": "\xff\xfe"}'),
]


@pytest.mark.parametrize(("what", "body"), HOSTILE_BODIES, ids=[w for w, _ in HOSTILE_BODIES])
@pytest.mark.parametrize("path", ["/v1/members", "/v1/auth/token"])
def test_hostile_json_is_malformed(
    client: FlaskClient, headers: dict[str, str], what: str, body: str | bytes, path: str
) -> None:
    response = client.post(path, data=body, content_type="application/json", headers=headers)
    assert_problem(response, 400, "malformed-json")


@pytest.mark.parametrize(
    "url",
    [
        "/v1/members?external_id=%00",
        "/v1/members?email=a%00",
        "/v1/members/mem_%00",
    ],
)
def test_nul_in_urls_is_a_bad_request(
    client: FlaskClient, headers: dict[str, str], url: str
) -> None:
    assert_problem(client.get(url, headers=headers), 400, "bad-request")


def test_nul_in_a_cursor(client: FlaskClient, headers: dict[str, str]) -> None:
    import base64

    cursor = base64.urlsafe_b64encode(b'{"after":"\\u0000"}').decode().rstrip("=")
    response = client.get(f"/v1/members?cursor={cursor}", headers=headers)
    body = assert_problem(response, 422, "validation-failed")
    assert body["errors"][0]["parameter"] == "cursor"


def test_nul_in_a_token_form(client: FlaskClient) -> None:
    response = client.post("/v1/auth/token", data={"client_id": "a\x00", "client_secret": "x"})
    assert_problem(response, 400, "bad-request")


def test_lone_surrogate_in_a_token_form(client: FlaskClient) -> None:
    response = client.post(
        "/v1/auth/token",
        data="client_id=cli_x&client_secret=%ED%A0%80",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"


@pytest.mark.parametrize(
    "enrolled_at",
    ["0001-01-01T00:30:00+01:00", "9999-12-31T23:00:00-12:00", "1800-01-01T00:00:00Z"],
)
def test_timestamps_out_of_range(
    client: FlaskClient, headers: dict[str, str], enrolled_at: str
) -> None:
    response = client.post(
        "/v1/members", json={"external_id": "x", "enrolled_at": enrolled_at}, headers=headers
    )
    body = assert_problem(response, 422, "validation-failed")
    assert body["errors"][0]["pointer"] == "#/enrolled_at"
    query = client.get("/v1/members?enrolled_before=0001-01-01T00:30:00%2B01:00", headers=headers)
    assert_problem(query, 422, "validation-failed")


def test_email_too_long_once_lower_cased(client: FlaskClient, headers: dict[str, str]) -> None:
    email = "\u0130" * 200 + "@example.com"
    response = client.post(
        "/v1/members", json={"external_id": "x", "email": email}, headers=headers
    )
    body = assert_problem(response, 422, "validation-failed")
    assert body["errors"][0]["pointer"] == "#/email"


def test_415_comes_after_routing_and_authentication(client: FlaskClient) -> None:
    form = {"data": "a=b", "content_type": "text/plain"}
    assert_problem(client.post("/v1/nowhere", **form), 404, "not-found")
    assert_problem(client.post("/v1/health", **form), 405, "method-not-allowed")
    assert_problem(client.post("/v1/members", **form), 401, "unauthenticated")


def test_unknown_scope_in_a_token_request_points_at_the_field(
    client: FlaskClient, make_headers: object
) -> None:
    from loyalty.auth import service as auth_service
    from loyalty.db import get_session

    with client.application.app_context():
        new = auth_service.create_client(get_session(), name="s", scopes=["members:read"])
    response = client.post(
        "/v1/auth/token",
        json={"client_id": new.client.id, "client_secret": new.secret, "scope": "foo"},
    )
    body = assert_problem(response, 422, "unknown-scope")
    [error] = body["errors"]
    assert error["pointer"] == "#/scope"
    assert error["detail"].startswith("1 unknown scope(s); the scopes are: members:read ")
    assert "foo" not in response.get_data(as_text=True)


def test_a_value_sent_is_not_repeated_in_the_detail(
    client: FlaskClient, headers: dict[str, str]
) -> None:
    order = {"order_id": "o-1", "member_id": "mem_x", "total": 100, "currency": "XQZ"}
    response = client.post("/v1/orders", json=order, headers=headers)
    body = assert_problem(response, 422, "validation-failed")
    assert body["errors"] == [
        {"pointer": "#/currency", "detail": "Not an ISO 4217 currency with minor units."}
    ]
    assert "XQZ" not in response.get_data(as_text=True)
