"""Referral test helpers: a controllable clock, factories for members, orders and terms, and
the ledger's invariants checked after every test."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from loyalty.ledger import service as ledger
from loyalty.members import service as members_service
from loyalty.members.models import Member
from loyalty.referrals import service
from loyalty.referrals.models import Referral, ReferralSettings
from tests.support import START, _invariants_hold, clock

DAY = dt.timedelta(days=1)
# Past the default 14-day return window.
WINDOW = dt.timedelta(days=15)
CLIENT = "shop"

_counter = iter(range(1, 10**9))


def make_member(session: Session, *, referrer: Member | None = None, **kw: Any) -> Member:
    """Enrol a member, invited by ``referrer`` when given."""
    if referrer is not None:
        kw["referral_code"] = referrer.referral_code
    member, _ = members_service.enroll_member(
        session, external_id=f"ref-cust-{next(_counter)}", **kw
    )
    return member


def place_order(
    session: Session, member_id: str, total: int, *, currency: str = "USD", **kw: Any
) -> str:
    order_id = f"order-{next(_counter)}"
    ledger.accrue_order(
        session,
        client_id=CLIENT,
        order_id=order_id,
        member_id=member_id,
        total=total,
        currency=currency,
        **kw,
    )
    return order_id


def refund(session: Session, order_id: str, amount: int) -> None:
    ledger.refund_order(
        session,
        client_id=CLIENT,
        order_id=order_id,
        refund_id=f"refund-{next(_counter)}",
        amount=amount,
    )


def settle(session: Session, member_id: str) -> None:
    """Do the member's due ledger work now (activations fire the referral hook)."""
    wallet = ledger.points_summaries(session, [member_id])[member_id]
    ledger.settle_wallet(session, wallet_id=wallet.id)


def terms(session: Session, **changes: Any) -> ReferralSettings:
    return service.update_settings(session, changes=changes, actor="test")


def referral_of(session: Session, referee_id: str) -> Referral:
    from sqlalchemy import select

    referral = session.scalar(
        select(Referral)
        .where(Referral.referee_id == referee_id)
        .execution_options(populate_existing=True)
    )
    assert referral is not None
    return referral


def available(session: Session, member_id: str) -> int:
    return ledger.get_balance(session, member_id).available


__all__ = ["START", "_invariants_hold", "clock"]
