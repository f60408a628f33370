"""Every error is an RFC 9457 problem: never HTML, never a leaked internal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from loyalty import create_app
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
    assert set(pointers) == {"#/external_id", "#/email", "#/color"}
    assert pointers["#/external_id"] == "Missing data for required field."
    assert pointers["#/color"] == "Unknown field."


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
