"""Bearer-token checks for the API's operations."""

from __future__ import annotations

from flask import g
from flask_jwt_extended import get_jwt, verify_jwt_in_request
from flask_jwt_extended.exceptions import JWTExtendedException, NoAuthorizationError
from jwt import ExpiredSignatureError, PyJWTError

from loyalty.auth import service
from loyalty.db import get_session
from loyalty.errors import (
    AuthenticationError,
    InsufficientScopeError,
    InvalidTokenError,
    TokenExpiredError,
)


def authenticate(scope: str) -> service.Principal:
    """Verify the request's bearer token and that it carries ``scope``; remember the caller.

    Raises `AuthenticationError` (401) for a missing, malformed, expired or revoked token and
    `InsufficientScopeError` (403) for a valid token without the scope.
    """
    try:
        verify_jwt_in_request()
    except NoAuthorizationError:
        raise AuthenticationError(
            "This call needs a bearer token: send 'Authorization: Bearer <access_token>' "
            "with a token from POST /v1/auth/token."
        ) from None
    except ExpiredSignatureError:
        raise TokenExpiredError() from None
    except (JWTExtendedException, PyJWTError):
        raise InvalidTokenError(
            "The bearer token is malformed or its signature is wrong."
        ) from None
    claims = get_jwt()
    if claims.get("typ") != "client" or not isinstance(claims.get("scope"), str):
        raise InvalidTokenError("The bearer token was not issued to an API client.")
    principal = service.principal_for_token(
        get_session(), client_id=str(claims["sub"]), scope=claims["scope"]
    )
    if scope not in principal.scopes:
        raise InsufficientScopeError(scope, list(principal.scopes))
    g.principal = principal
    return principal


def current_principal() -> service.Principal:
    """The caller authenticated for this request."""
    principal: service.Principal = g.principal
    return principal
