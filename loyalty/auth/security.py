"""HTTP authentication: bearer-token checks for the API's operations, and the client
credentials of the token endpoint's ``Authorization: Basic`` header."""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any
from urllib.parse import unquote_plus

from flask import current_app, g, request
from flask_jwt_extended import decode_token
from flask_jwt_extended.exceptions import JWTExtendedException
from jwt import ExpiredSignatureError, PyJWTError

from loyalty.auth import service
from loyalty.auth.errors import InsufficientScopeError, MalformedBasicCredentialsError
from loyalty.db import get_session
from loyalty.errors import AuthenticationError, InvalidTokenError, TokenExpiredError


def _authorization() -> tuple[str, str]:
    """The Authorization header's scheme, lower-cased (RFC 7235: schemes are case-insensitive),
    and its credentials."""
    scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
    return scheme.lower(), credentials.strip()


def authenticate(scope: str) -> service.Principal:
    """Verify the request's bearer token and that it carries ``scope``; remember the caller.

    Raises `AuthenticationError` (401) for a missing, malformed, expired or revoked token and
    `InsufficientScopeError` (403) for a valid token without the scope.
    """
    claims = _bearer_claims()
    if claims.get("typ") != "client" or not isinstance(claims.get("scope"), str):
        raise InvalidTokenError("The bearer token was not issued to an API client.")
    principal = service.principal_for_token(
        get_session(),
        client_id=str(claims["sub"]),
        scope=claims["scope"],
        max_age=current_app.config["AUTH_CACHE_SECONDS"],
    )
    if scope not in principal.scopes:
        raise InsufficientScopeError(scope, list(principal.scopes))
    g.principal = principal
    return principal


# Tokens whose signature this app verified, with their claims, until they expire: a
# signature is checked once per token and process, not on every request.
_VERIFIED = "loyalty.verified_tokens"
VERIFIED_TOKENS = 10_000


def _bearer_claims() -> dict[str, Any]:
    # flask-jwt-extended matches the scheme "Bearer" case-sensitively, so the header is read
    # here and only the token is handed to it.
    scheme, token = _authorization()
    if scheme != "bearer":
        raise AuthenticationError(
            "This call needs a bearer token: send 'Authorization: Bearer <access_token>' "
            "with a token from POST /v1/auth/token."
        )
    verified: dict[str, dict[str, Any]] = current_app.extensions.setdefault(_VERIFIED, {})
    claims: dict[str, Any] | None = verified.get(token)
    if claims is not None and claims["exp"] <= time.time():
        verified.pop(token, None)
        raise TokenExpiredError()
    if claims is None:
        try:
            claims = decode_token(token)
        except ExpiredSignatureError:
            raise TokenExpiredError() from None
        except (JWTExtendedException, PyJWTError):
            claims = {}
        if claims.get("type") == "access" and isinstance(claims.get("exp"), int | float):
            if len(verified) >= VERIFIED_TOKENS:
                verified.clear()
            verified[token] = claims
    if claims.get("type") != "access" or "sub" not in claims:
        raise InvalidTokenError("The bearer token is malformed or its signature is wrong.")
    return claims


def basic_credentials() -> tuple[str, str] | None:
    """The client id and secret of an ``Authorization: Basic`` header, or None when the request
    has none. RFC 6749 section 2.3.1: each is form-urlencoded, then they are joined by ":" and
    base64'd (what OAuth 2 client libraries send by default).

    Raises `MalformedBasicCredentialsError` (401) for a header that does not decode to both.
    """
    scheme, credentials = _authorization()
    if scheme != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise MalformedBasicCredentialsError("not base64 of UTF-8 text") from None
    client_id, colon, client_secret = decoded.partition(":")
    if not colon:
        raise MalformedBasicCredentialsError("no ':' between the client id and the secret")
    try:
        client_id = unquote_plus(client_id, errors="strict")
        client_secret = unquote_plus(client_secret, errors="strict")
    except UnicodeDecodeError:
        raise MalformedBasicCredentialsError("a percent-escape that is not UTF-8") from None
    if not client_id or not client_secret:
        raise MalformedBasicCredentialsError("an empty client id or secret")
    return client_id, client_secret


def current_principal() -> service.Principal:
    """The caller authenticated for this request."""
    principal: service.Principal = g.principal
    return principal
