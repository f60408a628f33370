"""The token endpoint and bearer-token checks over HTTP."""

from __future__ import annotations

import datetime as dt

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_jwt_extended import create_access_token
from sqlalchemy.orm import Session

from loyalty.auth import service
from tests.test_problems import assert_problem


@pytest.fixture
def credentials(session: Session) -> dict[str, str]:
    new = service.create_client(session, name="Shop", scopes=["members:read", "members:write"])
    return {"client_id": new.client.id, "client_secret": new.secret}


def test_token_with_json(client: FlaskClient, credentials: dict[str, str]) -> None:
    response = client.post("/v1/auth/token", json=credentials)
    assert response.status_code == 200
    body = response.json
    assert body is not None
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "members:read members:write"
    assert body["expires_in"] == 900
    me = client.get("/v1/members", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200


def test_token_with_an_oauth2_form(client: FlaskClient, credentials: dict[str, str]) -> None:
    response = client.post(
        "/v1/auth/token",
        data={"grant_type": "client_credentials", "scope": "members:read", **credentials},
    )
    assert response.status_code == 200
    assert response.json is not None and response.json["scope"] == "members:read"


def test_token_form_with_another_grant_type(
    client: FlaskClient, credentials: dict[str, str]
) -> None:
    response = client.post("/v1/auth/token", data={"grant_type": "password", **credentials})
    body = assert_problem(response, 422, "validation-failed")
    assert body["errors"][0]["pointer"] == "#/grant_type"


def test_wrong_secret(client: FlaskClient, credentials: dict[str, str]) -> None:
    response = client.post("/v1/auth/token", json={**credentials, "client_secret": "nope"})
    assert_problem(response, 401, "invalid-client")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_missing_credentials(client: FlaskClient) -> None:
    body = assert_problem(client.post("/v1/auth/token", json={}), 422, "validation-failed")
    assert {e["pointer"] for e in body["errors"]} == {"#/client_id", "#/client_secret"}


def test_scope_not_granted(client: FlaskClient, credentials: dict[str, str]) -> None:
    response = client.post("/v1/auth/token", json={**credentials, "scope": "points:adjust"})
    body = assert_problem(response, 403, "scope-not-granted")
    assert body["scopes"] == ["points:adjust"]


def test_missing_token(client: FlaskClient) -> None:
    response = client.get("/v1/members")
    assert_problem(response, 401, "unauthenticated")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="loyalty"'


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        ("Bearer not.a.jwt", "invalid-token"),
        ("Bearer a.b.c", "invalid-token"),
        ("Bearer ", "invalid-token"),
        ("Basic dXNlcjpwYXNz", "unauthenticated"),
    ],
)
def test_malformed_token(client: FlaskClient, authorization: str, code: str) -> None:
    response = client.get("/v1/members", headers={"Authorization": authorization})
    assert_problem(response, 401, code)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_token_signed_with_another_key(client: FlaskClient, credentials: dict[str, str]) -> None:
    other = Flask("other")
    other.config.update(JWT_SECRET_KEY="another-key-that-is-long-enough-to-sign-tokens")
    from flask_jwt_extended import JWTManager

    JWTManager(other)
    with other.app_context():
        token = create_access_token(
            identity=credentials["client_id"],
            additional_claims={"scope": "members:read", "typ": "client"},
        )
    response = client.get("/v1/members", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401, "invalid-token")


def test_expired_token(app: Flask, client: FlaskClient, credentials: dict[str, str]) -> None:
    with app.app_context():
        token = create_access_token(
            identity=credentials["client_id"],
            additional_claims={"scope": "members:read", "typ": "client"},
            expires_delta=dt.timedelta(seconds=-1),
        )
    response = client.get("/v1/members", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401, "token-expired")
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_revoked_clients_tokens_stop_working(
    client: FlaskClient, session: Session, credentials: dict[str, str]
) -> None:
    token = client.post("/v1/auth/token", json=credentials).json["access_token"]  # type: ignore[index]
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/members", headers=auth).status_code == 200
    service.revoke_client(session, client_id=credentials["client_id"])
    assert_problem(client.get("/v1/members", headers=auth), 401, "token-revoked")
    assert_problem(client.post("/v1/auth/token", json=credentials), 401, "invalid-client")


def test_wrong_scope_is_403(client: FlaskClient, session: Session) -> None:
    new = service.create_client(session, name="Reader", scopes=["members:read"])
    token = client.post(
        "/v1/auth/token", json={"client_id": new.client.id, "client_secret": new.secret}
    ).json["access_token"]  # type: ignore[index]
    response = client.post(
        "/v1/members", json={"external_id": "c1"}, headers={"Authorization": f"Bearer {token}"}
    )
    body = assert_problem(response, 403, "insufficient-scope")
    assert body["required_scope"] == "members:write"
