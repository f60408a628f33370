"""Stripe billing's services, one module per topic; callers use the names re-exported here.

- `events`: Stripe events in (webhook and reconciliation), recorded once, deferred until
  what they are about is known;
- `payments`: payments become orders and refunds become refunds, through the ledger;
- `subscriptions`: paid tiers (Checkout, and the subscription's events);
- `customers`: member to Stripe customer links;
- `promotions`: reward claims as Stripe promotion codes, and the job's calls;
- `reconcile`: Stripe's event log applied after an outage.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from loyalty.billing.service.customers import (
    LinkResult,
    get_customer_link,
    link_customer,
    unlink_customer,
)
from loyalty.billing.service.events import Received, list_events, receive_event, release
from loyalty.billing.service.payments import list_payments
from loyalty.billing.service.promotions import get_promotion_code, on_claim_changed
from loyalty.billing.service.promotions import run_due as _promotions_due
from loyalty.billing.service.reconcile import ReconcileReport, reconcile, stripe_events
from loyalty.billing.service.subscriptions import CheckoutResult, create_tier_checkout


def run_due(session: Session, *, batch_size: int = 50) -> dict[str, int]:
    """Billing's due work for ``loyalty jobs run``: the promotion code calls due."""
    return _promotions_due(session, batch_size=batch_size)


__all__ = [
    "CheckoutResult",
    "LinkResult",
    "ReconcileReport",
    "Received",
    "create_tier_checkout",
    "get_customer_link",
    "get_promotion_code",
    "link_customer",
    "list_events",
    "list_payments",
    "on_claim_changed",
    "receive_event",
    "reconcile",
    "release",
    "run_due",
    "stripe_events",
    "unlink_customer",
]
