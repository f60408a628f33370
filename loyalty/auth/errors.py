"""Errors of the token endpoint beyond the shared ones (OAuth 2's ``invalid_request``,
``unsupported_grant_type`` and ``invalid_client`` cases of RFC 6749 section 5.2)."""

from __future__ import annotations

from loyalty.errors import BadRequestError, InvalidClientError


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
