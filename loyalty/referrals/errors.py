"""Errors of referrals."""

from __future__ import annotations

from loyalty.errors import ConflictError, NotFoundError


class ReferralNotFoundError(NotFoundError):
    code = "referral-not-found"
    title = "Referral not found"

    def __init__(self, referral_id: str) -> None:
        super().__init__(f"No referral with id {referral_id!r}.", referral_id=referral_id)


class ReferralNotReviewableError(ConflictError):
    """Only a held or rejected referral can be approved, and only a held or pending one
    rejected."""

    code = "referral-not-reviewable"
    title = "Referral cannot be reviewed"

    def __init__(self, referral_id: str, status: str, action: str) -> None:
        super().__init__(
            f"Referral {referral_id!r} is {status}; it cannot be {action}.",
            referral_id=referral_id,
            referral_status=status,
        )
