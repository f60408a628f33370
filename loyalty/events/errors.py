"""Errors of the events area: webhook endpoints, their URLs, and outbox events."""

from __future__ import annotations

from loyalty.errors import ConflictError, InvalidFieldError, NotFoundError


class WebhookEndpointNotFoundError(NotFoundError):
    code = "webhook-endpoint-not-found"
    title = "Webhook endpoint not found"

    def __init__(self, endpoint_id: str) -> None:
        super().__init__(f"No webhook endpoint with id {endpoint_id!r}.", endpoint_id=endpoint_id)


class OutboxEventNotFoundError(NotFoundError):
    code = "event-not-found"
    title = "Event not found"

    def __init__(self, event_id: str) -> None:
        super().__init__(
            f"No event with id {event_id!r} (events are kept 30 days).", event_id=event_id
        )


class WebhookUrlNotAllowedError(InvalidFieldError):
    """A webhook URL whose host is not a public address (or does not resolve)."""

    code = "webhook-url-not-allowed"
    title = "Webhook URL not allowed"

    def __init__(self, reason: str) -> None:
        super().__init__(
            "url",
            f"The URL's host {reason}: webhooks go to public addresses only "
            "(LOYALTY_WEBHOOKS_ALLOW_PRIVATE=true lifts this for development).",
        )


class UnknownEventTypeFilterError(InvalidFieldError):
    code = "unknown-webhook-event-type"
    title = "Unknown webhook event type"

    def __init__(self, count: int) -> None:
        super().__init__(
            "event_types",
            f"{count} of the event types {'is' if count == 1 else 'are'} not in the catalogue: "
            "name a type, a family such as points.*, or *.",
        )


class WebhookEndpointDisabledError(ConflictError):
    code = "webhook-endpoint-disabled"
    title = "Webhook endpoint disabled"

    def __init__(self, endpoint_id: str) -> None:
        super().__init__(
            f"Webhook endpoint {endpoint_id!r} is disabled: enable it first, then replay.",
            endpoint_id=endpoint_id,
        )
