"""The one door to Stripe: whether billing is configured, the SDK client built from the
configuration, webhook signature checks, and the outbound calls billing makes (each wrapped so
that a failure becomes `StripeUnavailableError`, never a 500 that might echo a secret)."""

from __future__ import annotations

import json
import logging
from typing import Any

import stripe
from flask import current_app

from loyalty.billing.errors import (
    InvalidStripeEventError,
    InvalidStripeSignatureError,
    StripeNotConfiguredError,
    StripeUnavailableError,
)

log = logging.getLogger(__name__)


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
    try:
        return func(*args, **kwargs)
    except stripe.StripeError as error:
        log.warning("Stripe call %s failed: %s %s", what, type(error).__name__, error.code)
        raise StripeUnavailableError(error.code) from error


def plain(obj: Any) -> dict[str, Any]:
    """A Stripe object as plain JSON data."""
    result: dict[str, Any] = json.loads(json.dumps(obj.to_dict(for_json=True)))
    return result
