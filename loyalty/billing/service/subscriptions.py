"""Paid tiers: Checkout Sessions that sell a tier's subscription, and the subscription's
events, which grant the tier while it is paid, keep it through the grace after a failed
payment, and end it with the paid period after cancellation."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.billing import gateway, rules
from loyalty.billing.errors import TierNotPaidError
from loyalty.billing.models import StripeCustomer, StripeSubscription
from loyalty.billing.service._common import (
    ACTOR,
    Outcome,
    grace,
    linked_customer,
    member_for,
    transaction,
)
from loyalty.db import dialect_insert, in_request_transaction, retrying
from loyalty.errors import InvalidFieldError, LoyaltyError, ServiceUnavailableError
from loyalty.members import service as members
from loyalty.tiers import service as tiers


def apply_subscription(
    session: Session, state: rules.SubscriptionState, *, created: dt.datetime, checkout_paid: bool
) -> Outcome:
    """Bring the subscription's record up to what the event says (unless a newer event was
    applied already) and the member's paid tier in line with it. An event about a
    subscription not known yet, that names no member or tier, waits for the event that
    does (deferred)."""
    outcome = Outcome()
    sub = session.get(StripeSubscription, state.id, with_for_update=True)
    if sub is None:
        member_id = member_for(
            session,
            member_hint=state.member_id,
            customer_id=state.customer_id,
            source="checkout",
        )
        tier = _tier_of(session, state)
        if member_id is None or tier is None:
            outcome.status, outcome.waiting_for = "deferred", f"subscription:{state.id}"
            outcome.detail = (
                f"Subscription {state.id} is not known yet and the event names "
                + ("no member" if member_id is None else "no paid tier")
                + "; it runs again when the subscription's checkout arrives."
            )
            return outcome
        # Inserted, or found when a racing event of the same subscription got there first.
        now = clock.now()
        inserted = session.execute(
            dialect_insert(session)(StripeSubscription)
            .values(
                id=state.id,
                member_id=member_id,
                customer_id=state.customer_id,
                tier_code=tier,
                status="active" if checkout_paid else "incomplete",
                cancel_at_period_end=False,
                state_at=created,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing()
            .returning(StripeSubscription.id)
        ).first()
        sub = session.get(
            StripeSubscription, state.id, with_for_update=True, populate_existing=True
        )
        assert sub is not None
        outcome.known.append(f"subscription:{state.id}")
        if inserted is None and created < sub.state_at:
            outcome.detail = "Older than the subscription's state already applied: no change."
            return outcome
    elif created < sub.state_at:
        outcome.detail = "Older than the subscription's state already applied: no change."
        return outcome
    _apply(sub, state, created)
    sub.updated_at = clock.now()
    sub.granted_until = rules.granted_until(
        status=sub.status,
        current_period_end=sub.current_period_end,
        cancel_at_period_end=sub.cancel_at_period_end,
        payment_failed_at=sub.payment_failed_at,
        ended_at=sub.ended_at,
        grace=grace(),
        now=clock.now(),
    )
    session.flush()
    try:
        _grant(session, sub.member_id)
    except LoyaltyError as error:
        if isinstance(error, ServiceUnavailableError):
            raise
        outcome.status, outcome.detail = "review", f"{error.code}: {error.detail}"[:500]
    return outcome


def _apply(sub: StripeSubscription, state: rules.SubscriptionState, created: dt.datetime) -> None:
    if state.status is not None:
        sub.status = state.status
        if state.status in rules.PAID_STATUSES:
            sub.payment_failed_at = None
    if state.current_period_end is not None and (
        sub.current_period_end is None
        or state.status is not None
        or state.current_period_end > sub.current_period_end
    ):
        sub.current_period_end = state.current_period_end
    if state.cancel_at_period_end is not None:
        sub.cancel_at_period_end = state.cancel_at_period_end
    if state.ended_at is not None:
        sub.ended_at = state.ended_at
    if state.status in rules.ENDED_STATUSES and sub.ended_at is None:
        sub.ended_at = created
    if state.paid is True:
        sub.payment_failed_at = None
        if sub.status in (*rules.DUE_STATUSES, "incomplete"):  # paid: active again
            sub.status = "active"
    elif state.paid is False:
        sub.payment_failed_at = sub.payment_failed_at or created
        if sub.status in rules.PAID_STATUSES:
            sub.status = "past_due"
    sub.state_at = max(sub.state_at, created)


def _tier_of(session: Session, state: rules.SubscriptionState) -> str | None:
    ladder = tiers.ladder(session)
    if state.tier_code and state.tier_code in ladder:
        return state.tier_code
    if state.price_id:
        tier = tiers.tier_for_price(session, state.price_id)
        if tier is not None:
            return tier.code
    return None


def _grant(session: Session, member_id: str) -> None:
    """Give the member the highest tier their subscriptions grant now, or end the paid tier
    when none does."""
    now = clock.now()
    ranks = {code: ref.rank for code, ref in tiers.ladder(session).items()}
    subs = [
        sub
        for sub in session.scalars(
            select(StripeSubscription).where(
                StripeSubscription.member_id == member_id,
                StripeSubscription.granted_until > now,
            )
        )
        if sub.tier_code in ranks and sub.granted_until is not None
    ]
    if not subs:
        tiers.end_paid_within(
            session, member_id=member_id, reason="subscription not paid", actor=ACTOR
        )
        return
    best = max(subs, key=lambda sub: (ranks[sub.tier_code], sub.granted_until))
    assert best.granted_until is not None
    tiers.grant_paid_within(
        session,
        member_id=member_id,
        tier=best.tier_code,
        until=best.granted_until,
        reference=best.id,
        actor=ACTOR,
    )


# --- checkout ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckoutResult:
    id: str
    url: str
    tier: str
    customer_id: str
    expires_at: dt.datetime | None


@retrying
def create_tier_checkout(
    session: Session,
    *,
    member_id: str,
    tier: str,
    success_url: str | None = None,
    cancel_url: str | None = None,
) -> CheckoutResult:
    """Create a Stripe Checkout Session (subscription mode) that sells the paid ``tier`` to
    the member, creating and linking the member's Stripe customer first when there is none;
    returns the session's URL. The member's tier changes when the subscription's events
    arrive, not here. No lock is held while Stripe is called.

    Raises `StripeNotConfiguredError`, `MemberNotFoundError`, `TierNotFoundError`,
    `TierNotPaidError`, `InvalidFieldError` (no success or cancel URL, here or configured)
    and `StripeUnavailableError`.
    """
    gateway.require_configured()
    member = members.get_member(session, member_id)
    paid = tiers.get_tier(session, tier)
    if not paid.stripe_price_id:
        raise TierNotPaidError(tier)
    config = current_app.config
    success_url = success_url or config.get("STRIPE_SUCCESS_URL")
    cancel_url = cancel_url or config.get("STRIPE_CANCEL_URL")
    if not success_url:
        raise InvalidFieldError("success_url", "Give a success_url (none is configured).")
    if not cancel_url:
        raise InvalidFieldError("cancel_url", "Give a cancel_url (none is configured).")
    link = linked_customer(session, member_id)
    customer_id = link.customer_id if link is not None else None
    if not in_request_transaction(session):
        session.rollback()  # no transaction stays open while Stripe is called
    stripe = gateway.client()
    meta = {rules.MEMBER_METADATA_KEY: member_id, rules.TIER_METADATA_KEY: tier}
    if customer_id is None:
        created = gateway.call(
            "customers.create",
            stripe.v1.customers.create,
            params={
                "email": member.email or "",
                "name": member.name or "",
                "metadata": {rules.MEMBER_METADATA_KEY: member_id},
            }
            if member.email
            else {"metadata": {rules.MEMBER_METADATA_KEY: member_id}},
            options={"idempotency_key": f"loyalty-customer-{member_id}"},
        )
        customer_id = str(created.id)
        with transaction(session):
            if linked_customer(session, member_id) is None:
                member_for(
                    session, member_hint=member_id, customer_id=customer_id, source="checkout"
                )
            link = linked_customer(session, member_id)
            assert link is not None
            customer_id = link.customer_id
    checkout = gateway.call(
        "checkout.sessions.create",
        stripe.v1.checkout.sessions.create,
        params={
            "mode": "subscription",
            "customer": customer_id,
            "client_reference_id": member_id,
            "line_items": [{"price": paid.stripe_price_id, "quantity": 1}],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "metadata": meta,
            "subscription_data": {"metadata": meta},
        },
    )
    return CheckoutResult(
        id=str(checkout.id),
        url=str(checkout.url),
        tier=tier,
        customer_id=customer_id,
        expires_at=rules.timestamp(getattr(checkout, "expires_at", None)),
    )


def customer_link(session: Session, customer_id: str) -> StripeCustomer | None:
    return session.get(StripeCustomer, customer_id)
