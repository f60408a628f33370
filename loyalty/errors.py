"""Domain errors. They know nothing about HTTP; `loyalty.problems` maps them to responses."""

from __future__ import annotations

from typing import Any


class LoyaltyError(Exception):
    """Base of every domain error: a stable ``code`` slug, a title, a detail and extra data."""

    code = "error"
    title = "Error"

    def __init__(self, detail: str, **data: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.data = data


class NotFoundError(LoyaltyError):
    code = "not-found"
    title = "Not found"


class ConflictError(LoyaltyError):
    code = "conflict"
    title = "Conflict"


class RuleViolationError(LoyaltyError):
    code = "rule-violation"
    title = "Rule violation"


class PermissionDeniedError(LoyaltyError):
    code = "forbidden"
    title = "Forbidden"


class AuthenticationError(LoyaltyError):
    code = "unauthenticated"
    title = "Authentication required"


class ServiceUnavailableError(LoyaltyError):
    code = "service-unavailable"
    title = "Service unavailable"


class InvalidFieldError(RuleViolationError):
    """A field's value is well-formed but not acceptable (an unknown referral code, say)."""

    code = "validation-failed"
    title = "Validation failed"

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail, field=field)
        self.field = field


class MemberNotFoundError(NotFoundError):
    code = "member-not-found"
    title = "Member not found"

    def __init__(self, member_id: str) -> None:
        super().__init__(f"No member with id {member_id!r}.", member_id=member_id)


class MemberClosedError(ConflictError):
    code = "member-closed"
    title = "Member is closed"

    def __init__(self, member_id: str) -> None:
        super().__init__(
            f"Member {member_id!r} is closed; a closed membership cannot change.",
            member_id=member_id,
        )


class ClientNotFoundError(NotFoundError):
    code = "client-not-found"
    title = "API client not found"

    def __init__(self, client_id: str) -> None:
        super().__init__(f"No API client with id {client_id!r}.", client_id=client_id)


class InvalidClientError(AuthenticationError):
    code = "invalid-client"
    title = "Invalid client credentials"

    def __init__(self) -> None:
        super().__init__("The client id or secret is wrong, or the client has been revoked.")


class InvalidTokenError(AuthenticationError):
    code = "invalid-token"
    title = "Invalid access token"


class TokenExpiredError(AuthenticationError):
    code = "token-expired"
    title = "Access token expired"

    def __init__(self) -> None:
        super().__init__("The access token has expired; request a new one at /v1/auth/token.")


class TokenRevokedError(AuthenticationError):
    code = "token-revoked"
    title = "Access token revoked"

    def __init__(self) -> None:
        super().__init__("The API client that this token was issued to has been revoked.")


class InsufficientScopeError(PermissionDeniedError):
    code = "insufficient-scope"
    title = "Insufficient scope"

    def __init__(self, required: str, granted: list[str]) -> None:
        super().__init__(
            f"This call needs the {required!r} scope.", required_scope=required, granted=granted
        )


class UnknownScopeError(RuleViolationError):
    code = "unknown-scope"
    title = "Unknown scope"

    def __init__(self, scopes: list[str]) -> None:
        super().__init__(f"Unknown scope(s): {', '.join(scopes)}.", scopes=scopes)


class ScopeNotGrantedError(PermissionDeniedError):
    code = "scope-not-granted"
    title = "Scope not granted"

    def __init__(self, scopes: list[str]) -> None:
        super().__init__(
            f"This client is not allowed the scope(s): {', '.join(scopes)}.", scopes=scopes
        )
