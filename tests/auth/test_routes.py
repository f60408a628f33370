"""The token endpoint and bearer-token checks over HTTP."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from typing import Any
from urllib.parse import quote_plus

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_jwt_extended import create_access_token
from sqlalchemy import update
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from loyalty.auth import service
from loyalty.auth.models import ApiClient
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


def basic(client_id: str, client_secret: str, scheme: str = "Basic") -> dict[str, str]:
    """RFC 6749 section 2.3.1: each form-urlencoded, joined by ':', base64'd."""
    joined = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return {"Authorization": f"{scheme} {base64.b64encode(joined.encode()).decode()}"}


def assert_oauth_problem(response: TestResponse, status: int, code: str, error: str) -> Any:
    body = assert_problem(response, status, code)
    assert body["error"] == error
    assert body["error_description"] == body["detail"]
    assert response.headers["Cache-Control"] == "no-store"
    return body


@pytest.mark.parametrize("scheme", ["Basic", "basic", "BASIC"])
def test_token_with_http_basic(
    client: FlaskClient, credentials: dict[str, str], scheme: str
) -> None:
    response = client.post(
        "/v1/auth/token",
        data={"grant_type": "client_credentials", "scope": "members:read"},
        headers=basic(credentials["client_id"], credentials["client_secret"], scheme),
    )
    assert response.status_code == 200, response.json
    assert response.json is not None and response.json["scope"] == "members:read"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"


def test_basic_credentials_are_form_urlencoded_first(
    client: FlaskClient, credentials: dict[str, str]
) -> None:
    """A client id sent percent-encoded (as Authlib does for reserved characters) decodes."""
    client_id = credentials["client_id"].replace("_", "%5F")
    joined = f"{client_id}:{credentials['client_secret']}".encode()
    headers = {"Authorization": "Basic " + base64.b64encode(joined).decode()}
    response = client.post(
        "/v1/auth/token", data={"grant_type": "client_credentials"}, headers=headers
    )
    assert response.status_code == 200, response.json


def test_basic_with_a_json_body_or_none(client: FlaskClient, credentials: dict[str, str]) -> None:
    auth = basic(credentials["client_id"], credentials["client_secret"])
    with_json = client.post(
        "/v1/auth/token", json={"grant_type": "client_credentials"}, headers=auth
    )
    assert with_json.status_code == 200, with_json.json
    without_body = client.post("/v1/auth/token", headers=auth)
    assert without_body.status_code == 200, without_body.json


def test_basic_with_the_same_client_id_in_the_body(
    client: FlaskClient, credentials: dict[str, str]
) -> None:
    response = client.post(
        "/v1/auth/token",
        data={"grant_type": "client_credentials", "client_id": credentials["client_id"]},
        headers=basic(credentials["client_id"], credentials["client_secret"]),
    )
    assert response.status_code == 200, response.json


@pytest.mark.parametrize(
    "body",
    [
        {"client_secret": "lsk_other"},
        {"client_id": "cli_other"},
        {"client_id": "cli_other", "client_secret": "lsk_other"},
    ],
)
def test_credentials_in_basic_and_in_the_body_are_refused(
    client: FlaskClient, credentials: dict[str, str], body: dict[str, str]
) -> None:
    auth = basic(credentials["client_id"], credentials["client_secret"])
    for response in (
        client.post(
            "/v1/auth/token", data={"grant_type": "client_credentials", **body}, headers=auth
        ),
        client.post("/v1/auth/token", json=body, headers=auth),
    ):
        body_ = assert_oauth_problem(
            response, 400, "multiple-client-authentication", "invalid_request"
        )
        assert "lsk_other" not in json.dumps(body_)


def test_wrong_secret_with_basic(client: FlaskClient, credentials: dict[str, str]) -> None:
    response = client.post(
        "/v1/auth/token",
        data={"grant_type": "client_credentials"},
        headers=basic(credentials["client_id"], "lsk_wrong"),
    )
    assert_oauth_problem(response, 401, "invalid-client", "invalid_client")
    assert response.headers["WWW-Authenticate"] == 'Basic realm="loyalty"'


@pytest.mark.parametrize(
    "value",
    [
        "Basic",
        "Basic !!!",
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
        "Basic " + base64.b64encode(b"cli_x:%ff").decode(),
        "Basic " + base64.b64encode(b":lsk_secret").decode(),
        "Basic " + base64.b64encode(b"cli_x:").decode(),
        "Basic " + base64.b64encode(b"cli_x:secret").decode() + " trailing",
    ],
)
def test_malformed_basic_credentials(client: FlaskClient, value: str) -> None:
    response = client.post(
        "/v1/auth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": value},
    )
    body = assert_oauth_problem(response, 401, "invalid-client", "invalid_client")
    assert body["detail"].startswith("The Basic credentials are malformed")
    assert response.headers["WWW-Authenticate"] == 'Basic realm="loyalty"'


@pytest.mark.parametrize("grant_type", ["password", "authorization_code", ""])
def test_another_grant_type_is_unsupported(
    client: FlaskClient, credentials: dict[str, str], grant_type: str
) -> None:
    for response in (
        client.post("/v1/auth/token", data={"grant_type": grant_type, **credentials}),
        client.post("/v1/auth/token", json={"grant_type": grant_type, **credentials}),
    ):
        assert_oauth_problem(response, 400, "unsupported-grant-type", "unsupported_grant_type")


def test_wrong_secret(client: FlaskClient, credentials: dict[str, str]) -> None:
    response = client.post("/v1/auth/token", json={**credentials, "client_secret": "nope"})
    assert_oauth_problem(response, 401, "invalid-client", "invalid_client")
    # The token endpoint authenticates clients with Basic (or the body), not bearer tokens.
    assert response.headers["WWW-Authenticate"] == 'Basic realm="loyalty"'


def test_missing_credentials(client: FlaskClient) -> None:
    response = client.post("/v1/auth/token", json={})
    body = assert_oauth_problem(response, 422, "validation-failed", "invalid_request")
    assert {e["pointer"] for e in body["errors"]} == {"#/client_id", "#/client_secret"}


@pytest.mark.parametrize(
    ("content_type", "data", "status", "code"),
    [
        ("application/json", "{not json", 400, "malformed-json"),
        ("text/plain", "client_id=x", 415, "unsupported-media-type"),
    ],
)
def test_malformed_requests_are_invalid_request(
    client: FlaskClient, content_type: str, data: str, status: int, code: str
) -> None:
    response = client.post("/v1/auth/token", data=data, content_type=content_type)
    assert_oauth_problem(response, status, code, "invalid_request")


def test_scope_not_granted(client: FlaskClient, credentials: dict[str, str]) -> None:
    response = client.post("/v1/auth/token", json={**credentials, "scope": "points:adjust"})
    body = assert_oauth_problem(response, 403, "scope-not-granted", "invalid_scope")
    assert body["scopes"] == ["points:adjust"]


def test_unknown_scope(client: FlaskClient, credentials: dict[str, str]) -> None:
    response = client.post("/v1/auth/token", data={**credentials, "scope": "points:print"})
    assert_oauth_problem(response, 422, "unknown-scope", "invalid_scope")


def test_other_endpoints_carry_no_oauth_members(client: FlaskClient) -> None:
    body = assert_problem(client.get("/v1/members"), 401, "unauthenticated")
    assert "error" not in body


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
        ("Bearer a.b.c d.e.f", "invalid-token"),
        ("Bearertoken", "unauthenticated"),
        ("Basic dXNlcjpwYXNz", "unauthenticated"),
    ],
)
def test_malformed_token(client: FlaskClient, authorization: str, code: str) -> None:
    response = client.get("/v1/members", headers={"Authorization": authorization})
    assert_problem(response, 401, code)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(
    client: FlaskClient, credentials: dict[str, str], scheme: str
) -> None:
    token = client.post("/v1/auth/token", json=credentials).json["access_token"]  # type: ignore[index]
    response = client.get("/v1/members", headers={"Authorization": f"{scheme} {token}"})
    assert response.status_code == 200, response.json


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


def revoke_elsewhere(session: Session, client_id: str) -> None:
    """Revoke the client as another process would: a plain UPDATE, which this process's
    cache of clients does not hear of."""
    session.execute(
        update(ApiClient)
        .where(ApiClient.id == client_id)
        .values(revoked_at=dt.datetime.now(dt.UTC))
    )
    session.commit()


def test_a_revocation_from_another_process_takes_effect_within_the_cache_bound(
    app: Flask,
    client: FlaskClient,
    session: Session,
    credentials: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another process (here: a plain UPDATE, which this process's cache does not hear of)
    revokes the client: its tokens stop working once AUTH_CACHE_SECONDS have passed."""
    monkeypatch.setitem(app.config, "AUTH_CACHE_SECONDS", 0.5)
    token = client.post("/v1/auth/token", json=credentials).json["access_token"]  # type: ignore[index]
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/members", headers=auth).status_code == 200  # the client is cached
    revoke_elsewhere(session, credentials["client_id"])
    time.sleep(0.6)
    assert_problem(client.get("/v1/members", headers=auth), 401, "token-revoked")


def test_with_no_cache_every_request_checks_the_client(
    app: Flask,
    client: FlaskClient,
    session: Session,
    credentials: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(app.config, "AUTH_CACHE_SECONDS", 0)
    token = client.post("/v1/auth/token", json=credentials).json["access_token"]  # type: ignore[index]
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/members", headers=auth).status_code == 200
    revoke_elsewhere(session, credentials["client_id"])
    assert_problem(client.get("/v1/members", headers=auth), 401, "token-revoked")


def test_a_verified_token_still_expires(
    app: Flask, client: FlaskClient, credentials: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tokens are verified once per process and kept until they expire, not longer."""
    monkeypatch.setitem(app.config, "TOKEN_TTL", 1)
    token = client.post("/v1/auth/token", json=credentials).json["access_token"]  # type: ignore[index]
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/members", headers=auth).status_code == 200  # verified and kept
    time.sleep(1.2)
    assert_problem(client.get("/v1/members", headers=auth), 401, "token-expired")


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
