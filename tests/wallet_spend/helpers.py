"""Shared helpers of the probes of the wallets' spend and order count."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty.ledger import rules
from loyalty.ledger.models import Order, Wallet


def kept(session: Session, member_id: str) -> tuple[Decimal, int]:
    """What the member's wallet keeps, read afresh."""
    session.expire_all()
    wallet = session.scalars(select(Wallet).where(Wallet.member_id == member_id)).one()
    return wallet.spend, wallet.order_count


def summed(session: Session, member_id: str) -> tuple[Decimal, int]:
    """The member's spend and order count added up from the orders (as before 2a98305)."""
    spend, count = Decimal(0), 0
    for order in session.scalars(select(Order).where(Order.member_id == member_id)):
        if order.amount_refunded < order.total:
            exponent = rules.currency_exponent(order.currency) or 0
            spend += Decimal(order.total - order.amount_refunded).scaleb(-exponent)
            count += 1
    return spend, count


def agrees(session: Session, member_id: str) -> tuple[Decimal, int]:
    have, want = kept(session, member_id), summed(session, member_id)
    assert have == want, (have, want)
    return have
