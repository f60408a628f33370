"""Rewards as Stripe promotion codes: a discount reward's claim gets a one-time promotion code
with the claim's coupon code (restricted to the member's customer when one is linked);
cancelling or using the claim deactivates it. The claim's transaction only records what must
be done; the job makes the calls (`run_due`), outside any transaction, retried with backoff and
idempotent (Stripe idempotency keys, fixed coupon ids)."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.billing import gateway, rules
from loyalty.billing.errors import StripeUnavailableError
from loyalty.billing.models import StripePromotionCode
from loyalty.billing.service._common import linked_customer
from loyalty.db import retrying, unit_of_work
from loyalty.rewards import service as rewards
from loyalty.rewards.events import ClaimChanged

log = logging.getLogger(__name__)

DISCOUNT_KINDS = ("fixed_discount", "percentage_discount")
# A row taken by a runner is left alone by others this long (the runner's calls to Stripe).
LEASE = dt.timedelta(minutes=5)


def on_claim_changed(session: Session, event: ClaimChanged) -> None:
    """Subscriber: a claim was issued, used or cancelled. With Stripe configured, a discount
    claim's promotion code is queued for creation, and deactivation follows the claim's
    end. Writes one row; calls nothing (the claim's transaction holds the wallet's lock)."""
    if not gateway.configured():
        return
    now = clock.now()
    row = session.get(StripePromotionCode, event.claim_id)
    if event.status == "issued":
        if row is not None:
            return
        reward = rewards.get_reward(session, event.reward_id)
        if reward.kind not in DISCOUNT_KINDS:
            return
        claim = rewards.get_claim(session, event.claim_id)
        fixed = reward.kind == "fixed_discount"
        session.add(
            StripePromotionCode(
                claim_id=event.claim_id,
                member_id=event.member_id,
                code=event.code,
                amount_off=reward.amount if fixed else None,
                currency=reward.currency if fixed else None,
                percent_off=None if fixed else reward.percent,
                expires_at=claim.expires_at,
                status="creating",
                deactivate=False,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
        )
    elif row is not None and not row.deactivate:
        row.deactivate = True
        row.updated_at = now
        if row.status == "active":
            row.status, row.attempts, row.next_attempt_at = "deactivating", 0, now
        elif row.status == "failed":
            row.status, row.next_attempt_at = "inactive", None


@dataclass(frozen=True)
class _Work:
    claim_id: str
    member_id: str
    code: str
    status: str
    amount_off: int | None
    currency: str | None
    percent_off: int | None
    expires_at: dt.datetime | None
    coupon_id: str | None
    promotion_code_id: str | None
    customer_id: str | None


def run_due(session: Session, *, batch_size: int = 50) -> dict[str, int]:
    """The job's share (``loyalty jobs run``): make the promotion code calls that are due.
    Each row is taken in a short transaction (``FOR UPDATE SKIP LOCKED``, then a lease), the
    call is made with no transaction open, and the result is written in another."""
    counts = {
        "promotion codes created": 0,
        "promotion codes deactivated": 0,
        "promotion code calls failed": 0,
    }
    if not gateway.configured():
        return counts
    while True:
        batch = _lease(session, batch_size=batch_size)
        for work in batch:
            label = _perform(session, work)
            counts[label] += 1
        if len(batch) < batch_size:
            return counts


@retrying
def _lease(session: Session, *, batch_size: int) -> list[_Work]:
    with unit_of_work(session):
        now = clock.now()
        query = (
            select(StripePromotionCode)
            .where(
                StripePromotionCode.status.in_(("creating", "deactivating")),
                StripePromotionCode.next_attempt_at <= now,
            )
            .order_by(StripePromotionCode.next_attempt_at, StripePromotionCode.claim_id)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        )
        rows = list(session.scalars(query))
        work = []
        for row in rows:
            row.next_attempt_at = now + LEASE
            link = linked_customer(session, row.member_id)
            work.append(
                _Work(
                    claim_id=row.claim_id,
                    member_id=row.member_id,
                    code=row.code,
                    status=row.status,
                    amount_off=row.amount_off,
                    currency=row.currency,
                    percent_off=row.percent_off,
                    expires_at=row.expires_at,
                    coupon_id=row.coupon_id,
                    promotion_code_id=row.promotion_code_id,
                    customer_id=link.customer_id if link is not None else None,
                )
            )
    return work


def _perform(session: Session, work: _Work) -> str:
    """Make one row's call and record what came of it; the count label."""
    created: tuple[str, str] | None = None
    error: str | None = None
    try:
        if work.status == "creating":
            created = _create(work)
        else:
            _deactivate(work)
    except StripeUnavailableError as failure:
        error = str(failure.data.get("stripe_code") or "stripe-unavailable")
    return _record(session, work, created, error)


@retrying
def _record(
    session: Session, work: _Work, created: tuple[str, str] | None, error: str | None
) -> str:
    with unit_of_work(session):
        now = clock.now()
        row = session.get(
            StripePromotionCode, work.claim_id, with_for_update=True, populate_existing=True
        )
        assert row is not None
        row.updated_at = now
        if error is not None:
            row.attempts += 1
            row.last_error = error[:500]
            if row.attempts >= rules.MAX_ATTEMPTS:
                row.status, row.next_attempt_at = "failed", None
            else:
                row.next_attempt_at = now + rules.retry_delay(row.attempts)
            return "promotion code calls failed"
        row.attempts, row.last_error = 0, None
        if created is not None:
            row.coupon_id, row.promotion_code_id = created
            if row.deactivate:  # the claim ended while the code was being made
                row.status, row.next_attempt_at = "deactivating", now
            else:
                row.status, row.next_attempt_at = "active", None
            return "promotion codes created"
        row.status, row.next_attempt_at = "inactive", None
        return "promotion codes deactivated"


def _create(work: _Work) -> tuple[str, str]:
    client = gateway.client()
    coupon_id = work.coupon_id or f"loyalty-{work.claim_id}"
    params: dict[str, Any] = {
        "id": coupon_id,
        "duration": "once",
        "metadata": {rules.CLAIM_METADATA_KEY: work.claim_id},
    }
    if work.amount_off is not None:
        params.update(amount_off=work.amount_off, currency=(work.currency or "").lower())
    else:
        params["percent_off"] = work.percent_off
    gateway.create_coupon(client, params, key=f"loyalty-coupon-{work.claim_id}")
    promo: dict[str, Any] = {
        "promotion": {"type": "coupon", "coupon": coupon_id},
        "code": work.code,
        "max_redemptions": 1,
        "metadata": {rules.CLAIM_METADATA_KEY: work.claim_id, "loyalty_member_id": work.member_id},
    }
    if work.customer_id:
        promo["customer"] = work.customer_id
    if work.expires_at is not None:
        promo["expires_at"] = int(work.expires_at.timestamp())
    made = gateway.call(
        "promotion_codes.create",
        client.v1.promotion_codes.create,
        params=promo,
        options={"idempotency_key": f"loyalty-promotion-code-{work.claim_id}"},
    )
    return coupon_id, str(made.id)


def _deactivate(work: _Work) -> None:
    if work.promotion_code_id is None:
        return
    client = gateway.client()
    gateway.call(
        "promotion_codes.update",
        client.v1.promotion_codes.update,
        work.promotion_code_id,
        params={"active": False},
    )


def get_promotion_code(session: Session, claim_id: str) -> StripePromotionCode | None:
    """The Stripe promotion code of a claim, if it has one."""
    return session.get(StripePromotionCode, claim_id)
