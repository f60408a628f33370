"""Errors of the points core: orders and refunds, holds and redemptions, points missing, and
the dates the ledger refuses for orders and engagement events (`check_age`)."""

from __future__ import annotations

from loyalty.errors import ConflictError, InvalidFieldError, NotFoundError, RuleViolationError


class InsufficientPointsError(ConflictError):
    code = "insufficient-points"
    title = "Insufficient points"

    def __init__(self, available: int, requested: int) -> None:
        super().__init__(
            f"The member has {available} points available; {requested} were requested.",
            available=available,
            requested=requested,
        )


class OrderNotFoundError(NotFoundError):
    code = "order-not-found"
    title = "Order not found"

    def __init__(self, order_id: str) -> None:
        super().__init__(f"This channel has no order {order_id!r}.", order_id=order_id)


class OrderTooOldError(InvalidFieldError):
    """An order or event dated before the programme's maximum age: history comes in through
    the import (``loyalty import``), not through the API."""

    code = "order-too-old"
    title = "Order too old"

    def __init__(self, field: str, max_age_days: int, kind: str = "order") -> None:
        super().__init__(
            field,
            f"This {kind} is dated more than {max_age_days} days ago, the programme's maximum "
            "age; import history with `loyalty import` instead.",
            max_age_days=max_age_days,
        )


class EventTooOldError(OrderTooOldError):
    code = "event-too-old"
    title = "Event too old"


class OrderInFutureError(InvalidFieldError):
    code = "order-in-future"
    title = "Order in the future"

    def __init__(self, field: str = "placed_at") -> None:
        super().__init__(field, "Must not be more than 5 minutes in the future.")


class OrderConflictError(ConflictError):
    code = "order-conflict"
    title = "Order already reported with other data"

    def __init__(self, order_id: str) -> None:
        super().__init__(
            f"Order {order_id!r} was already reported with a different body; an order's data "
            "cannot change (report a refund instead).",
            order_id=order_id,
        )


class RefundConflictError(ConflictError):
    code = "refund-conflict"
    title = "Refund already reported with other data"

    def __init__(self, refund_id: str) -> None:
        super().__init__(
            f"Refund {refund_id!r} was already reported with a different body or order.",
            refund_id=refund_id,
        )


class RefundExceedsOrderError(RuleViolationError):
    code = "refund-exceeds-order"
    title = "Refund exceeds what is left of the order"


class HoldNotFoundError(NotFoundError):
    code = "hold-not-found"
    title = "Hold not found"

    def __init__(self, hold_id: str) -> None:
        super().__init__(f"No hold with id {hold_id!r}.", hold_id=hold_id)


class HoldNotHeldError(ConflictError):
    code = "hold-not-held"
    title = "Hold is no longer held"

    def __init__(self, hold_id: str, status: str) -> None:
        super().__init__(
            f"Hold {hold_id!r} is {status}; only a held hold can be captured or released.",
            hold_id=hold_id,
            hold_status=status,
        )


class CaptureExceedsHoldError(RuleViolationError):
    code = "capture-exceeds-hold"
    title = "Capture exceeds the hold"

    def __init__(self, held: int, requested: int) -> None:
        super().__init__(
            f"The hold reserves {held} points; {requested} cannot be captured.",
            held=held,
            requested=requested,
        )


class RedemptionNotFoundError(NotFoundError):
    code = "redemption-not-found"
    title = "Redemption not found"

    def __init__(self, redemption_id: str) -> None:
        super().__init__(f"No redemption {redemption_id!r}.", redemption_id=redemption_id)


class RedemptionAlreadyReturnedError(ConflictError):
    code = "redemption-already-returned"
    title = "Redemption already returned"

    def __init__(self, redemption_id: str) -> None:
        super().__init__(
            f"The points of redemption {redemption_id!r} were already given back.",
            redemption_id=redemption_id,
        )


class EventInFutureError(InvalidFieldError):
    code = "event-in-future"
    title = "Event in the future"

    def __init__(self) -> None:
        super().__init__("occurred_at", "Must not be more than 5 minutes in the future.")
