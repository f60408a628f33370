"""The one door to Stripe: whether billing is configured, the SDK client built from the
configuration, webhook signature checks, and the outbound calls billing makes (each wrapped so
that a failure becomes `StripeUnavailableError`, never a 500 that might echo a secret)."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, cast

from flask import current_app

from loyalty.billing.errors import (
    InvalidStripeEventError,
    InvalidStripeSignatureError,
    StripeNotConfiguredError,
    StripeUnavailableError,
)

if TYPE_CHECKING:
    import stripe

log = logging.getLogger(__name__)

# The SDK takes about a second to import: it is imported on first use, so that the app, the
# command line and the job start as fast without billing as before it.


def configured() -> bool:
    """Whether Stripe billing is on (both secrets set)."""
    config = current_app.config
    return bool(config.get("STRIPE_SECRET_KEY") and config.get("STRIPE_WEBHOOK_SECRET"))


def require_configured() -> None:
    """Raise `StripeNotConfiguredError` (409) unless billing is on."""
    if not configured():
        raise StripeNotConfiguredError()


def client() -> stripe.StripeClient:
    """The app's SDK client (one per app and configuration)."""
    import stripe

    require_configured()
    config = current_app.config
    key = (config["STRIPE_SECRET_KEY"], config.get("STRIPE_API_BASE"))
    cached = current_app.extensions.get("loyalty.stripe")
    if cached is None or cached[0] != key:
        base = config.get("STRIPE_API_BASE")
        made = stripe.StripeClient(
            config["STRIPE_SECRET_KEY"],
            base_addresses={"api": base} if base else {},
            max_network_retries=2,
        )
        cached = (key, made)
        current_app.extensions["loyalty.stripe"] = cached
    result: stripe.StripeClient = cached[1]
    return result


def verify_event(payload: bytes, signature: str | None) -> dict[str, Any]:
    """Check ``Stripe-Signature`` over the raw body with the endpoint's secret through the SDK
    (within the configured tolerance) and parse the event. Raises
    `InvalidStripeSignatureError` or `InvalidStripeEventError` (400)."""
    import stripe

    require_configured()
    config = current_app.config
    try:
        stripe.WebhookSignature.verify_header(
            payload,
            signature,
            config["STRIPE_WEBHOOK_SECRET"],
            tolerance=config["STRIPE_WEBHOOK_TOLERANCE"],
        )
    except stripe.SignatureVerificationError:
        raise InvalidStripeSignatureError(
            "The Stripe-Signature header is missing, malformed, too old, or not made with "
            "this endpoint's signing secret."
        ) from None
    except UnicodeDecodeError:
        raise InvalidStripeEventError("The body is not UTF-8 text.") from None
    try:
        event = json.loads(payload)
    except ValueError:
        raise InvalidStripeEventError("The body is not a JSON Stripe event.") from None
    return check_event(event)


def check_event(event: Any) -> dict[str, Any]:
    """The event if it has what billing reads (id, type, created, data.object)."""
    if not (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and 0 < len(event["id"]) <= 255
        and isinstance(event.get("type"), str)
        and 0 < len(event["type"]) <= 100
        and isinstance(event.get("created"), int)
        and isinstance(event.get("data"), dict)
        and isinstance(event["data"].get("object"), dict)
    ):
        raise InvalidStripeEventError(
            "A Stripe event has an id, a type, a created time and data.object."
        )
    return event


def call(what: str, func: Any, /, *args: Any, **kwargs: Any) -> Any:
    """Run one SDK call; Stripe's errors become `StripeUnavailableError` (logged, with
    Stripe's error code but not its message)."""
    import stripe

    try:
        return func(*args, **kwargs)
    except stripe.StripeError as error:
        log.warning("Stripe call %s failed: %s %s", what, type(error).__name__, error.code)
        raise StripeUnavailableError(error.code) from error


def create_coupon(client: stripe.StripeClient, params: dict[str, Any], *, key: str) -> None:
    """Create a coupon with a fixed id; one that exists already (made by an earlier try whose
    answer was lost) is taken as made."""
    import stripe

    try:
        client.v1.coupons.create(params=cast(Any, params), options={"idempotency_key": key})
    except stripe.StripeError as failure:
        if failure.code != "resource_already_exists" and failure.http_status != 409:
            log.warning("Stripe call coupons.create failed: %s", failure.code)
            raise StripeUnavailableError(failure.code) from failure


def plain(obj: Any) -> dict[str, Any]:
    """A Stripe object as plain JSON data."""
    result: dict[str, Any] = json.loads(json.dumps(obj.to_dict(for_json=True)))
    return result
