"""Errors of the auth area: API clients and their credentials, scopes, the token endpoint's
(OAuth 2's ``invalid_request``, ``unsupported_grant_type`` and ``invalid_client`` cases of RFC
6749 section 5.2) and channels'. The token errors the HTTP plumbing answers itself
(`InvalidTokenError`, `TokenExpiredError`, `TokenRevokedError`) are in `loyalty.errors`."""

from __future__ import annotations

from loyalty.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InvalidFieldError,
    NotFoundError,
    PermissionDeniedError,
)


class ClientNotFoundError(NotFoundError):
    code = "client-not-found"
    title = "API client not found"

    def __init__(self, client_id: str) -> None:
        super().__init__(f"No API client with id {client_id!r}.", client_id=client_id)


class InvalidClientError(AuthenticationError):
    code = "invalid-client"
    title = "Invalid client credentials"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(
            detail or "The client id or secret is wrong, or the client has been revoked."
        )


class InsufficientScopeError(PermissionDeniedError):
    code = "insufficient-scope"
    title = "Insufficient scope"

    def __init__(self, required: str, granted: list[str]) -> None:
        super().__init__(
            f"This call needs the {required!r} scope.", required_scope=required, granted=granted
        )


class UnknownScopeError(InvalidFieldError):
    code = "unknown-scope"
    title = "Unknown scope"

    def __init__(self, scopes: list[str], known: tuple[str, ...] | list[str]) -> None:
        # The scopes asked for are not repeated: a client may have put anything there.
        super().__init__(
            "scope", f"{len(scopes)} unknown scope(s); the scopes are: {' '.join(known)}."
        )
        self.scopes = scopes


class ScopeNotGrantedError(PermissionDeniedError):
    code = "scope-not-granted"
    title = "Scope not granted"

    def __init__(self, scopes: list[str]) -> None:
        super().__init__(
            f"This client is not allowed the scope(s): {', '.join(scopes)}.", scopes=scopes
        )


class UnsupportedGrantTypeError(BadRequestError):
    code = "unsupported-grant-type"
    title = "Unsupported grant type"

    def __init__(self) -> None:
        super().__init__("The only grant type is client_credentials.")


class MultipleClientAuthenticationError(BadRequestError):
    code = "multiple-client-authentication"
    title = "Client credentials given twice"

    def __init__(self) -> None:
        super().__init__(
            "Send the client credentials once: in the Authorization header (HTTP Basic) or in "
            "the body, not both."
        )


class MalformedBasicCredentialsError(InvalidClientError):
    """An ``Authorization: Basic`` header that does not decode to a client id and secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"The Basic credentials are malformed ({reason}): send base64 of "
            "client_id:client_secret, each form-urlencoded."
        )


class ChannelNotFoundError(NotFoundError):
    code = "channel-not-found"
    title = "Channel not found"

    def __init__(self, channel_id: str) -> None:
        super().__init__(f"No channel with id {channel_id!r}.", channel_id=channel_id)


class ChannelExistsError(ConflictError):
    code = "channel-exists"
    title = "Channel already exists"

    def __init__(self, name: str) -> None:
        super().__init__("A channel with this name already exists.", name=name)
