"""Stripe events in: each recorded once (by webhook or reconciliation), handled by type, and
those that arrive before what they are about wait for it (deferred) and run when it comes."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.billing import rules
from loyalty.billing.models import StripeEvent
from loyalty.billing.service._common import Outcome, transaction
from loyalty.billing.service.payments import link_from_metadata, record_payment, record_refunds
from loyalty.billing.service.subscriptions import apply_subscription
from loyalty.db import Page, dialect_insert, keyset_page, retrying

# Deferred events released by one key are run at most this many at a time (and then by
# the job or the next reconciliation).
RELEASE_LIMIT = 200


@dataclass(frozen=True)
class Received:
    """What became of an event: ``replayed`` when it had been recorded before."""

    event_id: str
    type: str
    status: str
    replayed: bool
    detail: str | None


@retrying
def receive_event(session: Session, *, event: dict[str, Any], source: str) -> Received:
    """Record the Stripe ``event`` (checked by `gateway.check_event`) once and apply it; an
    event recorded before is acknowledged with no effect (``replayed``). Types billing does
    not act on are recorded as ``ignored``. One transaction: the record, the orders, refunds
    and tier changes it causes, and the deferred events it releases commit together (each
    effect in a savepoint of its own, so one that is refused is recorded for review without
    undoing the rest). Locks the wallets and tier rows the effects need, in their order.
    """
    created = rules.timestamp(event["created"]) or clock.now()
    with transaction(session):
        insert = dialect_insert(session)
        inserted = session.execute(
            insert(StripeEvent)
            .values(
                id=event["id"],
                type=event["type"],
                created=created,
                received_at=clock.now(),
                source=source,
                status="deferred",
            )
            .on_conflict_do_nothing()
            .returning(StripeEvent.id)
        ).first()
        row = session.get(StripeEvent, event["id"], populate_existing=True)
        assert row is not None
        if inserted is None:
            return Received(row.id, row.type, row.status, True, row.detail)
        _run(session, row, event["data"]["object"])
        return Received(row.id, row.type, row.status, False, row.detail)


def _run(session: Session, row: StripeEvent, obj: dict[str, Any]) -> None:
    """Handle the event ``row`` (whose data.object is ``obj``) and then the deferred events
    it releases."""
    outcome = handle(session, row.type, obj, row.id, row.created)
    row.status = outcome.status
    row.detail = outcome.detail[:500] if outcome.detail else None
    row.waiting_for = outcome.waiting_for if outcome.status == "deferred" else None
    # Kept while the event waits (it runs again from it) and for review.
    row.payload = obj if outcome.status in ("deferred", "review") else None
    row.processed_at = None if outcome.status == "deferred" else clock.now()
    session.flush()
    release(session, outcome.known)


def release(session: Session, keys: list[str]) -> int:
    """Run again the deferred events waiting for ``keys``, oldest first; how many ran."""
    ran = 0
    for key in keys:
        waiting = list(
            session.scalars(
                select(StripeEvent)
                .where(StripeEvent.status == "deferred", StripeEvent.waiting_for == key)
                .order_by(StripeEvent.created, StripeEvent.id)
                .limit(RELEASE_LIMIT)
                .with_for_update()
            )
        )
        for row in waiting:
            if row.payload is not None:
                _run(session, row, row.payload)
                ran += 1
    return ran


def handle(
    session: Session, type_: str, obj: dict[str, Any], event_id: str, created: dt.datetime
) -> Outcome:
    """Apply one event by type: payments, refunds, subscriptions; others are ignored."""
    if type_ not in rules.HANDLED_EVENTS:
        return Outcome(status="ignored", detail="Billing does not act on this event type.")
    if type_ in rules.CUSTOMER_EVENTS:
        return link_from_metadata(session, obj)
    if type_ in rules.REFUND_EVENTS:
        return record_refunds(session, rules.refunds_of(type_, obj), event_id=event_id)
    if type_ in rules.PAYMENT_EVENTS:
        payment = rules.payment_of(type_, obj)
        if payment is not None:
            return record_payment(session, payment, event_id=event_id, at=created)
    state = None if type_ == "payment_intent.succeeded" else rules.subscription_of(type_, obj)
    if state is None:
        return Outcome(
            status="ignored", detail="Neither a completed payment nor a paid tier's subscription."
        )
    paid = type_ == "checkout.session.completed" and obj.get("payment_status") == "paid"
    return apply_subscription(session, state, created=created, checkout_paid=paid)


def list_events(
    session: Session, *, status: str | None = None, limit: int = 50, cursor: str | None = None
) -> Page[StripeEvent]:
    """Recorded Stripe events, by id descending, optionally of one status (``review`` and
    ``deferred`` are those to look at)."""
    query: Select[StripeEvent] = select(StripeEvent).order_by(StripeEvent.id.desc())
    if status is not None:
        query = query.where(StripeEvent.status == status)
    return keyset_page(session, query, StripeEvent.id, limit, cursor, newest_first=True)


def recorded_ids(session: Session, ids: list[str]) -> set[str]:
    """Which of the Stripe event ``ids`` are recorded."""
    if not ids:
        return set()
    return set(session.scalars(select(StripeEvent.id).where(StripeEvent.id.in_(ids))))
