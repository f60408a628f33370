"""Domain errors shared by every area. They know nothing about HTTP; `loyalty.problems` maps
them to responses by base class and ``code``.

Here are the base classes that every error builds on, the errors the ground floor and the HTTP
plumbing raise (malformed JSON, access tokens, idempotency keys, a busy ledger), and the errors
that several areas raise. An area's own errors are in ``loyalty/<area>/errors.py``.
"""

from __future__ import annotations

from typing import Any


class LoyaltyError(Exception):
    """Base of every domain error: a stable ``code`` slug, a title, a detail and extra data.

    ``field`` names the request field at fault, when there is one (it becomes a pointer).
    """

    code = "error"
    title = "Error"
    field: str | None = None

    def __init__(self, detail: str, **data: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.data = data


class BadRequestError(LoyaltyError):
    code = "bad-request"
    title = "Bad request"


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

    def __init__(self, field: str, detail: str, **data: Any) -> None:
        super().__init__(detail, **data)
        self.field = field


class ConfigNotFoundError(NotFoundError):
    """A configured thing (campaign, tier, perk, reward...) that does not exist."""

    code = "not-found"
    title = "Not found"

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"No {kind} {key!r}.", **{kind.replace(" ", "_"): key})


# --- raised by the ground floor and the HTTP plumbing --------------------------------------
# The access-token errors are auth's, but `loyalty.problems` answers them with a
# ``WWW-Authenticate`` error of their own, so they are here where it can name them.


class MalformedJSONError(BadRequestError):
    code = "malformed-json"
    title = "Malformed JSON"

    def __init__(self, reason: str) -> None:
        super().__init__(f"The request body is not valid JSON: {reason}.")


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


class InvalidIdempotencyKeyError(RuleViolationError):
    code = "invalid-idempotency-key"
    title = "Invalid Idempotency-Key"

    def __init__(self) -> None:
        super().__init__("Idempotency-Key must be 1 to 255 printable ASCII characters.")


class IdempotencyKeyReusedError(RuleViolationError):
    code = "idempotency-key-reused"
    title = "Idempotency-Key reused"

    def __init__(self) -> None:
        super().__init__(
            "This Idempotency-Key was already used for a different request (method, path or "
            "body); use a new key for a new request."
        )


class IdempotencyKeyInUseError(ConflictError):
    code = "idempotency-key-in-use"
    title = "Idempotency-Key in use"

    def __init__(self) -> None:
        super().__init__(
            "A request with this Idempotency-Key is still being processed; retry shortly to "
            "get its result."
        )


class LedgerBusyError(ServiceUnavailableError):
    code = "ledger-busy"
    title = "Ledger busy"

    def __init__(self) -> None:
        super().__init__("The member's ledger is busy; retry the request.")


# --- raised by several areas ----------------------------------------------------------------


class MemberClosedError(ConflictError):
    code = "member-closed"
    title = "Member is closed"

    def __init__(self, member_id: str) -> None:
        super().__init__(
            f"Member {member_id!r} is closed; a closed membership cannot change.",
            member_id=member_id,
        )


class MemberNotActiveError(ConflictError):
    code = "member-not-active"
    title = "Member is not active"

    def __init__(self, member_id: str, status: str) -> None:
        super().__init__(
            f"Member {member_id!r} is {status}: it can neither earn nor redeem points.",
            member_id=member_id,
            member_status=status,
        )


class UnknownRewardError(InvalidFieldError):
    code = "unknown-reward"
    title = "Unknown reward"

    def __init__(self, reward_id: str) -> None:
        super().__init__("reward_id", "No reward has this id.")
        self.reward_id = reward_id  # for the code; the id sent is not repeated to the client
