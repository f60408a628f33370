"""Errors of the community area: event types, event rules, badges, and engagement events."""

from __future__ import annotations

from loyalty.errors import ConfigNotFoundError, ConflictError, InvalidFieldError


class EventTypeNotFoundError(ConfigNotFoundError):
    code = "event-type-not-found"
    title = "Event type not found"

    def __init__(self, name: str) -> None:
        super().__init__("event type", name)


class EventRuleNotFoundError(ConfigNotFoundError):
    code = "event-rule-not-found"
    title = "Event rule not found"

    def __init__(self, rule_id: str) -> None:
        super().__init__("event rule", rule_id)


class BadgeNotFoundError(ConfigNotFoundError):
    code = "badge-not-found"
    title = "Badge not found"

    def __init__(self, badge_id: str) -> None:
        super().__init__("badge", badge_id)


class EventTypeExistsError(ConflictError):
    code = "event-type-exists"
    title = "Event type already exists"

    def __init__(self, name: str) -> None:
        super().__init__(f"An event type {name!r} already exists.", event_type=name)


class EventTypeInUseError(ConflictError):
    code = "event-type-in-use"
    title = "Event type in use"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"Event type {name!r} has events, a rule or badges, so it stays.", event_type=name
        )


class EventRuleExistsError(ConflictError):
    code = "event-rule-exists"
    title = "Event rule already exists"

    def __init__(self, name: str, rule_id: str) -> None:
        super().__init__(
            f"Events of type {name!r} already have rule {rule_id!r}; change that one instead.",
            event_type=name,
            rule_id=rule_id,
        )


class BadgeInUseError(ConflictError):
    code = "badge-in-use"
    title = "Badge in use"

    def __init__(self, badge_id: str) -> None:
        super().__init__(
            f"Badge {badge_id!r} has been awarded, so it stays; set active to false instead.",
            badge_id=badge_id,
        )


class EventConflictError(ConflictError):
    code = "event-conflict"
    title = "Event already reported with other data"

    def __init__(self, event_id: str) -> None:
        super().__init__(
            f"Event {event_id!r} was already reported with a different body.", event_id=event_id
        )


class UnknownEventTypeError(InvalidFieldError):
    code = "unknown-event-type"
    title = "Unknown event type"

    def __init__(self, field: str, name: str) -> None:
        super().__init__(field, "No event type has this name; declare it first.")
        self.event_type = name  # for the code; the name sent is not repeated to the client


class InvalidEventPropertyError(InvalidFieldError):
    """A property of an event (or named by a rule or badge) that its type does not allow;
    ``field`` points at it (``properties/co2_kg``)."""

    code = "invalid-event-property"
    title = "Invalid event property"
