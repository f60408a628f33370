"""Payments become orders, refunds become refunds: through the ledger's own order and refund
services, so the programme's earning rules, pending window, natural-key idempotency and domain
events apply as they do to ``POST /v1/orders``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.auth import service as auth
from loyalty.billing import rules
from loyalty.billing.models import StripePayment, StripePromotionCode, StripeRefund
from loyalty.billing.service._common import ACTOR, Outcome, channel, member_for
from loyalty.db import Page, dialect_insert, keyset_page
from loyalty.errors import LoyaltyError, ServiceUnavailableError
from loyalty.ledger import service as ledger
from loyalty.ledger.errors import RefundExceedsOrderError
from loyalty.rewards import service as rewards
from loyalty.rewards.errors import ClaimNotIssuedError


def record_payment(
    session: Session, payment: rules.Payment, *, event_id: str, at: dt.datetime
) -> Outcome:
    """Record a successful payment once and accrue it as the order ``payment.id`` for its
    member; a payment whose member is not known yet is kept ``unmatched`` for review (it
    accrues when its customer is linked). Promotion codes it used mark their claims used."""
    outcome = Outcome(known=[f"payment:{payment.id}"])
    # Inserted, or found (an earlier or racing event of the same payment), then locked: the
    # events of one payment are applied one after the other.
    now = clock.now()
    inserted = session.execute(
        dialect_insert(session)(StripePayment)
        .values(
            id=payment.id,
            customer_id=payment.customer_id,
            amount=payment.amount,
            currency=payment.currency.upper()[:3],
            paid_at=at,
            status="unmatched",
            event_id=event_id,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing()
        .returning(StripePayment.id)
    ).first()
    row = session.get(StripePayment, payment.id, with_for_update=True, populate_existing=True)
    assert row is not None
    if inserted is None and row.status != "unmatched":
        outcome.detail = f"Payment {payment.id} was recorded before."
        _use_promotion_codes(session, payment.promotion_codes)
        return outcome
    member_id = member_for(
        session,
        member_hint=payment.member_id,
        customer_id=payment.customer_id or row.customer_id,
        source="metadata",
    )
    if member_id is None:
        row.detail = (
            f"No member is linked to Stripe customer {payment.customer_id}."
            if payment.customer_id
            else "The payment names no customer and no loyalty_member_id."
        )
        outcome.status, outcome.detail = "review", row.detail
        return outcome
    accrue(session, row, member_id)
    if row.status == "review":
        outcome.status, outcome.detail = "review", row.detail
    _use_promotion_codes(session, payment.promotion_codes)
    return outcome


def accrue(session: Session, row: StripePayment, member_id: str) -> None:
    """Accrue ``row`` as an order of ``member_id`` (``accrued``), or keep why it could not
    (``review``: an inactive member, a currency the programme does not know...)."""
    row.member_id = member_id
    row.updated_at = clock.now()
    try:
        auth.get_channel(session, channel())  # a misconfigured channel is a reason, not a 500
        result = ledger.accrue_order(
            session,
            order_id=row.id,
            member_id=member_id,
            total=row.amount,
            currency=row.currency,
            placed_at=min(row.paid_at, clock.now()),
            channel_id=channel(),
            actor=ACTOR,
        )
    except LoyaltyError as error:
        if isinstance(error, ServiceUnavailableError):
            raise  # busy: the whole event is tried again (Stripe retries it)
        row.status = "review"
        row.detail = f"{error.code}: {error.detail}"[:500]
        return
    row.status = "accrued"
    row.points = int(result.body["points"])
    row.detail = None


def accrue_unmatched(session: Session, *, customer_id: str, member_id: str) -> list[str]:
    """Accrue the customer's unmatched payments for ``member_id`` (just linked); the keys of
    those accrued."""
    rows = session.scalars(
        select(StripePayment)
        .where(StripePayment.customer_id == customer_id, StripePayment.status == "unmatched")
        .order_by(StripePayment.paid_at)
        .with_for_update()
    )
    known = []
    for row in rows:
        accrue(session, row, member_id)
        known.append(f"payment:{row.id}")
    return known


def link_from_metadata(session: Session, customer: dict[str, Any]) -> Outcome:
    """A customer created or updated with ``metadata.loyalty_member_id``: link it to that
    member (unless either is linked already) and accrue its payments kept for review."""
    customer_id = rules.ref(customer.get("id"))
    hint = rules.metadata(customer, rules.MEMBER_METADATA_KEY)
    if customer_id is None or hint is None:
        return Outcome(status="ignored", detail="The customer names no loyalty member.")
    member_id = member_for(session, member_hint=hint, customer_id=customer_id, source="metadata")
    if member_id is None:
        return Outcome(status="review", detail=f"No member {hint!r} to link the customer to.")
    if member_id != hint:
        return Outcome(detail=f"The customer is linked to member {member_id} already.")
    return Outcome(known=accrue_unmatched(session, customer_id=customer_id, member_id=member_id))


def record_refunds(session: Session, refunds: list[rules.RefundInfo], *, event_id: str) -> Outcome:
    """Reverse each refund (once per refund id) on its payment's order. A refund of a
    payment not accrued yet waits for it (deferred); a refund larger than what is left of the
    order reverses what is left and is kept for review."""
    outcome = Outcome()
    if not refunds:
        outcome.status, outcome.detail = "ignored", "The event carries no refund to apply."
    notes = []
    for refund in refunds:
        if refund.payment_id is None:
            outcome.status = "review"
            notes.append(f"Refund {refund.id} names no PaymentIntent.")
            continue
        # The payment's row is locked: refunds of one payment are applied one at a time.
        payment = session.get(
            StripePayment, refund.payment_id, with_for_update=True, populate_existing=True
        )
        if payment is None or payment.status == "unmatched":
            outcome.status = "deferred"
            outcome.waiting_for = f"payment:{refund.payment_id}"
            notes.append(f"Refund {refund.id} waits for payment {refund.payment_id}.")
            continue
        if session.get(StripeRefund, refund.id) is not None:
            notes.append(f"Refund {refund.id} was applied before.")
            continue
        row = _reverse(session, payment, refund, event_id)
        if row.status == "review":
            if outcome.status != "deferred":
                outcome.status = "review"
            notes.append(row.detail or "")
    outcome.detail = " ".join(notes)[:500] or None
    return outcome


def _reverse(
    session: Session, payment: StripePayment, refund: rules.RefundInfo, event_id: str
) -> StripeRefund:
    row = StripeRefund(
        id=refund.id,
        payment_id=payment.id,
        amount=refund.amount,
        amount_applied=0,
        points_reversed=0,
        status="reversed",
        event_id=event_id,
        created_at=clock.now(),
    )
    session.add(row)
    if payment.status != "accrued":
        row.status, row.detail = (
            "review",
            f"Payment {payment.id} earned no points: {payment.detail}",
        )
        row.detail = row.detail[:500]
        return row
    applied = refund.amount
    try:
        try:
            result = _refund(session, payment, refund.id, applied)
        except RefundExceedsOrderError as error:
            applied = int(error.data.get("refundable_amount") or 0)
            row.status = "review"
            row.detail = (
                f"Stripe refunded {refund.amount} but only {applied} of order {payment.id} "
                "was left to refund."
            )
            if applied <= 0:
                return row
            result = _refund(session, payment, refund.id, applied)
    except LoyaltyError as error:
        if isinstance(error, ServiceUnavailableError):
            raise
        row.status, row.detail = "review", f"{error.code}: {error.detail}"[:500]
        row.amount_applied = 0
        return row
    row.amount_applied = applied
    row.points_reversed = int(result.body["points_reversed"])
    return row


def _refund(
    session: Session, payment: StripePayment, refund_id: str, amount: int
) -> ledger.Replayable:
    return ledger.refund_order(
        session,
        order_id=payment.id,
        refund_id=refund_id,
        amount=amount,
        channel_id=channel(),
        actor=ACTOR,
    )


def _use_promotion_codes(session: Session, promotion_code_ids: tuple[str, ...]) -> None:
    """Mark used the claims whose promotion codes a payment used (once: a used, cancelled or
    expired claim stays as it is)."""
    for promotion_code_id in promotion_code_ids:
        claim_id = session.scalar(
            select(StripePromotionCode.claim_id).where(
                StripePromotionCode.promotion_code_id == promotion_code_id
            )
        )
        if claim_id is None:
            continue
        try:
            rewards.use_claim(session, claim_id=claim_id, actor=ACTOR)
        except ClaimNotIssuedError:
            pass


def list_payments(
    session: Session, *, status: str | None = None, limit: int = 50, cursor: str | None = None
) -> Page[StripePayment]:
    """Recorded Stripe payments in a stable order (by payment id, descending), optionally of
    one status (``unmatched`` and ``review`` are those to look at)."""
    query: Select[StripePayment] = select(StripePayment).order_by(StripePayment.id.desc())
    if status is not None:
        query = query.where(StripePayment.status == status)
    return keyset_page(session, query, StripePayment.id, limit, cursor, newest_first=True)
