"""Errors of Stripe billing: configuration, webhook signatures, customer links, checkout."""

from __future__ import annotations

from loyalty.errors import (
    BadRequestError,
    ConflictError,
    InvalidFieldError,
    NotFoundError,
    ServiceUnavailableError,
)


class StripeNotConfiguredError(ConflictError):
    code = "stripe-not-configured"
    title = "Stripe is not configured"

    def __init__(self) -> None:
        super().__init__(
            "Stripe billing is off: set LOYALTY_STRIPE_SECRET_KEY and "
            "LOYALTY_STRIPE_WEBHOOK_SECRET to turn it on."
        )


class InvalidStripeSignatureError(BadRequestError):
    code = "invalid-stripe-signature"
    title = "Invalid Stripe signature"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)


class InvalidStripeEventError(BadRequestError):
    code = "invalid-stripe-event"
    title = "Invalid Stripe event"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)


class StripeCustomerLinkedError(ConflictError):
    code = "stripe-customer-linked"
    title = "Stripe customer already linked"

    def __init__(self, customer_id: str, member_id: str) -> None:
        super().__init__(
            f"Stripe customer {customer_id!r} and member {member_id!r} cannot be linked: one "
            "of them is linked already (unlink it first).",
            customer_id=customer_id,
            member_id=member_id,
        )


class StripeCustomerNotFoundError(NotFoundError):
    code = "stripe-customer-not-found"
    title = "No Stripe customer linked"

    def __init__(self, member_id: str) -> None:
        super().__init__(
            f"Member {member_id!r} has no Stripe customer linked.", member_id=member_id
        )


class TierNotPaidError(InvalidFieldError):
    code = "tier-not-paid"
    title = "Tier not paid"

    def __init__(self, tier: str) -> None:
        super().__init__(
            "tier", f"Tier {tier!r} has no Stripe price: it cannot be bought.", tier=tier
        )


class StripeUnavailableError(ServiceUnavailableError):
    code = "stripe-unavailable"
    title = "Stripe did not answer"

    def __init__(self, stripe_code: str | None = None) -> None:
        super().__init__(
            "The call to Stripe failed; nothing was charged. Try again shortly.",
            stripe_code=stripe_code,
        )
