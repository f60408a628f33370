"""Real OAuth 2 client libraries get tokens from the app served on a loopback socket, with their
defaults (HTTP Basic client authentication), and call the API with them."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session as AuthlibSession
from authlib.integrations.requests_client import OAuthError
from flask import Flask
from oauthlib.oauth2 import BackendApplicationClient, InvalidClientError
from requests_oauthlib import OAuth2Session as RequestsOAuthSession
from werkzeug.serving import make_server

from loyalty.auth import service
from loyalty.db import get_database


@pytest.fixture
def base_url(app: Flask) -> Iterator[str]:
    """The app on a free loopback port, one request at a time (they share the test's
    connection to the database)."""
    httpd = make_server("127.0.0.1", 0, app, threaded=False)
    thread = threading.Thread(target=httpd.serve_forever, name="oauth-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        thread.join(timeout=30)
        httpd.server_close()


@pytest.fixture
def credentials(app: Flask) -> tuple[str, str]:
    with app.app_context():
        session = get_database(app).sessionmaker()
        try:
            new = service.create_client(session, name="Shop", scopes=["members:read"])
        finally:
            session.close()
    return new.client.id, new.secret


@pytest.fixture
def plain_http(monkeypatch: pytest.MonkeyPatch) -> None:
    """oauthlib insists on https unless told this is a test over plain http."""
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")


def assert_token_works(base_url: str, token: dict[str, object]) -> None:
    assert token["token_type"] == "Bearer"
    scope = token["scope"]  # oauthlib splits it into a list
    assert (" ".join(scope) if isinstance(scope, list) else scope) == "members:read"
    response = requests.get(
        f"{base_url}/v1/members",
        headers={"Authorization": f"Bearer {token['access_token']}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["items"] == []


def test_authlib_gets_a_token_with_http_basic(base_url: str, credentials: tuple[str, str]) -> None:
    client_id, client_secret = credentials
    with AuthlibSession(client_id, client_secret) as oauth:
        assert oauth.token_endpoint_auth_method == "client_secret_basic"
        token = oauth.fetch_token(f"{base_url}/v1/auth/token", grant_type="client_credentials")
        assert_token_works(base_url, token)
        members = oauth.get(f"{base_url}/v1/members", timeout=30)
        assert members.status_code == 200, members.text


def test_authlib_with_the_secret_in_the_form(base_url: str, credentials: tuple[str, str]) -> None:
    client_id, client_secret = credentials
    with AuthlibSession(
        client_id, client_secret, token_endpoint_auth_method="client_secret_post"
    ) as oauth:
        token = oauth.fetch_token(f"{base_url}/v1/auth/token", grant_type="client_credentials")
    assert_token_works(base_url, token)


def test_authlib_with_a_wrong_secret(base_url: str, credentials: tuple[str, str]) -> None:
    client_id, _ = credentials
    with AuthlibSession(client_id, "lsk_wrong") as oauth, pytest.raises(OAuthError) as raised:
        oauth.fetch_token(f"{base_url}/v1/auth/token", grant_type="client_credentials")
    assert raised.value.error == "invalid_client"


def test_requests_oauthlib_gets_a_token_with_http_basic(
    base_url: str, credentials: tuple[str, str], plain_http: None
) -> None:
    client_id, client_secret = credentials
    oauth = RequestsOAuthSession(client=BackendApplicationClient(client_id=client_id))
    token = oauth.fetch_token(
        f"{base_url}/v1/auth/token", client_id=client_id, client_secret=client_secret
    )
    assert_token_works(base_url, token)
    members = oauth.get(f"{base_url}/v1/members", timeout=30)
    assert members.status_code == 200, members.text


def test_requests_oauthlib_with_a_wrong_secret(
    base_url: str, credentials: tuple[str, str], plain_http: None
) -> None:
    client_id, _ = credentials
    oauth = RequestsOAuthSession(client=BackendApplicationClient(client_id=client_id))
    with pytest.raises(InvalidClientError) as raised:
        oauth.fetch_token(f"{base_url}/v1/auth/token", client_id=client_id, client_secret="nope")
    assert raised.value.error == "invalid_client"
    assert raised.value.status_code == 401
