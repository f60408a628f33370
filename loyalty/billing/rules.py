"""Pure rules of Stripe billing: reading Stripe objects, what a subscription grants, and the
backoff of outbound calls. No database, no Flask, no network."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

MEMBER_METADATA_KEY = "loyalty_member_id"
TIER_METADATA_KEY = "loyalty_tier"
CLAIM_METADATA_KEY = "loyalty_claim_id"

# The events billing acts on; any other type is acknowledged and ignored.
PAYMENT_EVENTS = ("payment_intent.succeeded", "checkout.session.completed")
REFUND_EVENTS = ("charge.refunded", "refund.created")
SUBSCRIPTION_EVENTS = (
    "invoice.paid",
    "invoice.payment_failed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
)
CUSTOMER_EVENTS = ("customer.created", "customer.updated")
HANDLED_EVENTS = (*CUSTOMER_EVENTS, *PAYMENT_EVENTS, *REFUND_EVENTS, *SUBSCRIPTION_EVENTS)

# Subscription statuses in which the tier is paid for, and those in which a payment is due.
PAID_STATUSES = ("active", "trialing")
DUE_STATUSES = ("past_due", "unpaid")
ENDED_STATUSES = ("canceled", "incomplete_expired")

# Outbound calls (promotion codes) that fail are tried again after 1, 2, 4 ... minutes, at
# most an hour apart, this many times in all.
MAX_ATTEMPTS = 10


def timestamp(value: Any) -> dt.datetime | None:
    """A Stripe timestamp (Unix seconds) as an aware UTC datetime."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return dt.datetime.fromtimestamp(int(value), dt.UTC)


def ref(value: Any) -> str | None:
    """The id of a Stripe reference, whether expanded (an object) or not (a string)."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def metadata(obj: dict[str, Any], key: str) -> str | None:
    value = (obj.get("metadata") or {}).get(key)
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class Payment:
    """A successful payment as billing needs it."""

    id: str  # the PaymentIntent's id (the Checkout Session's when it has none)
    customer_id: str | None
    member_id: str | None  # from metadata or client_reference_id
    amount: int
    currency: str
    paid_at: dt.datetime | None
    promotion_codes: tuple[str, ...]


def payment_of(event_type: str, obj: dict[str, Any]) -> Payment | None:
    """The payment an event reports, or None when it reports no completed one-off payment
    (a subscription's checkout, an unpaid session, an invoice's PaymentIntent)."""
    if event_type == "checkout.session.completed":
        if obj.get("mode") != "payment" or obj.get("payment_status") not in ("paid", None):
            return None
        discounts = obj.get("discounts") or []
        codes = tuple(code for d in discounts if (code := ref(d.get("promotion_code"))) is not None)
        return Payment(
            id=ref(obj.get("payment_intent")) or str(obj["id"]),
            customer_id=ref(obj.get("customer")),
            member_id=metadata(obj, MEMBER_METADATA_KEY) or obj.get("client_reference_id"),
            amount=int(obj.get("amount_total") or 0),
            currency=str(obj.get("currency") or ""),
            paid_at=timestamp(obj.get("created")),
            promotion_codes=codes,
        )
    if obj.get("invoice"):
        return None  # a subscription's payment: it pays for a tier, it earns nothing
    received = obj.get("amount_received")
    return Payment(
        id=str(obj["id"]),
        customer_id=ref(obj.get("customer")),
        member_id=metadata(obj, MEMBER_METADATA_KEY),
        amount=int(received if isinstance(received, int) else obj.get("amount") or 0),
        currency=str(obj.get("currency") or ""),
        paid_at=timestamp(obj.get("created")),
        promotion_codes=(),
    )


@dataclass(frozen=True)
class RefundInfo:
    id: str
    payment_id: str | None  # the PaymentIntent refunded
    charge_id: str | None
    amount: int


def refunds_of(event_type: str, obj: dict[str, Any]) -> list[RefundInfo]:
    """The refunds an event reports: a refund object (``refund.created``), or a charge's
    refunds (``charge.refunded``; the list is on the charge in API versions before
    2022-11-15, else empty: subscribe to ``refund.created`` then). Failed and cancelled
    refunds are left out."""
    if event_type == "refund.created":
        items = [obj]
        payment, charge = ref(obj.get("payment_intent")), ref(obj.get("charge"))
    else:
        items = list((obj.get("refunds") or {}).get("data") or [])
        payment, charge = ref(obj.get("payment_intent")), str(obj.get("id") or "") or None
    result = []
    for item in items:
        if item.get("status") in ("failed", "canceled") or not item.get("id"):
            continue
        result.append(
            RefundInfo(
                id=str(item["id"]),
                payment_id=ref(item.get("payment_intent")) or payment,
                charge_id=ref(item.get("charge")) or charge,
                amount=int(item.get("amount") or 0),
            )
        )
    return result


@dataclass(frozen=True)
class SubscriptionState:
    """What an event says of a subscription."""

    id: str
    customer_id: str | None
    member_id: str | None
    tier_code: str | None
    price_id: str | None
    status: str | None  # None: the event does not say (an invoice)
    current_period_end: dt.datetime | None
    cancel_at_period_end: bool | None
    ended_at: dt.datetime | None
    paid: bool | None  # an invoice paid (True) or failed (False)


def subscription_of(event_type: str, obj: dict[str, Any]) -> SubscriptionState | None:
    """The subscription state an event reports, or None (a one-off payment's checkout, an
    invoice of no subscription)."""
    if event_type == "checkout.session.completed":
        sub = ref(obj.get("subscription"))
        if obj.get("mode") != "subscription" or sub is None:
            return None
        return SubscriptionState(
            id=sub,
            customer_id=ref(obj.get("customer")),
            member_id=metadata(obj, MEMBER_METADATA_KEY) or obj.get("client_reference_id"),
            tier_code=metadata(obj, TIER_METADATA_KEY),
            price_id=None,
            status=None,
            current_period_end=None,
            cancel_at_period_end=None,
            ended_at=None,
            paid=None,
        )
    if event_type.startswith("invoice."):
        sub = ref(obj.get("subscription")) or ref(
            ((obj.get("parent") or {}).get("subscription_details") or {}).get("subscription")
        )
        if sub is None:
            return None
        lines = (obj.get("lines") or {}).get("data") or []
        ends = [t for line in lines if (t := timestamp((line.get("period") or {}).get("end")))]
        details = obj.get("subscription_details") or {}
        return SubscriptionState(
            id=sub,
            customer_id=ref(obj.get("customer")),
            member_id=metadata(details, MEMBER_METADATA_KEY),
            tier_code=metadata(details, TIER_METADATA_KEY),
            price_id=_line_price(lines),
            status=None,
            current_period_end=max(ends) if ends else None,
            cancel_at_period_end=None,
            ended_at=None,
            paid=event_type == "invoice.paid",
        )
    items = (obj.get("items") or {}).get("data") or []
    period_end = timestamp(obj.get("current_period_end"))
    if period_end is None:  # newer API versions keep the period on the items
        ends = [t for item in items if (t := timestamp(item.get("current_period_end")))]
        period_end = max(ends) if ends else None
    return SubscriptionState(
        id=str(obj["id"]),
        customer_id=ref(obj.get("customer")),
        member_id=metadata(obj, MEMBER_METADATA_KEY),
        tier_code=metadata(obj, TIER_METADATA_KEY),
        price_id=_line_price(items),
        status="canceled" if event_type.endswith(".deleted") else obj.get("status"),
        current_period_end=period_end,
        cancel_at_period_end=bool(obj.get("cancel_at_period_end")),
        ended_at=timestamp(obj.get("ended_at")),
        paid=None,
    )


def _line_price(lines: list[dict[str, Any]]) -> str | None:
    for line in lines:
        price = ref(line.get("price")) or ref(line.get("plan"))
        if price is None:
            pricing = (line.get("pricing") or {}).get("price_details") or {}
            price = ref(pricing.get("price"))
        if price:
            return price
    return None


def granted_until(
    *,
    status: str,
    current_period_end: dt.datetime | None,
    cancel_at_period_end: bool,
    payment_failed_at: dt.datetime | None,
    ended_at: dt.datetime | None,
    grace: dt.timedelta,
    now: dt.datetime,
) -> dt.datetime | None:
    """Until when a subscription grants its tier (None: not at all).

    Paid (active, trialing): to the end of the paid period, plus the grace so that the
    renewal's payment has time to arrive, unless it is cancelled at period end (then to the
    end exactly). A payment due (past_due, unpaid): the grace from the first failed payment
    (or from now, when that is unknown). Ended: not at all, or to its end when that is still
    ahead. Never paid (incomplete) or any other status: not at all.
    """
    if status in PAID_STATUSES:
        if current_period_end is None:
            return now + grace
        return current_period_end if cancel_at_period_end else current_period_end + grace
    if status in DUE_STATUSES:
        return (payment_failed_at or now) + grace
    if status in ENDED_STATUSES:
        end = ended_at or now
        return end if end > now else None
    return None


def retry_delay(attempts: int) -> dt.timedelta:
    """The wait before the next try of an outbound call that failed ``attempts`` times."""
    return dt.timedelta(minutes=min(2 ** max(attempts - 1, 0), 60))
