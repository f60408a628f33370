"""Errors of the auth area beyond the shared ones: the token endpoint's (OAuth 2's
``invalid_request``, ``unsupported_grant_type`` and ``invalid_client`` cases of RFC 6749
section 5.2) and the channels'."""

from __future__ import annotations

from loyalty.errors import BadRequestError, ConflictError, InvalidClientError, NotFoundError


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
