"""Links between members and Stripe customers, set by the API (they are also made from
``metadata.loyalty_member_id`` on Stripe objects, and at checkout)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.billing import gateway
from loyalty.billing.errors import StripeCustomerLinkedError, StripeCustomerNotFoundError
from loyalty.billing.models import StripeCustomer
from loyalty.billing.service._common import linked_customer, transaction
from loyalty.billing.service.events import release
from loyalty.billing.service.payments import accrue_unmatched
from loyalty.db import retrying
from loyalty.members import service as members


@dataclass(frozen=True)
class LinkResult:
    link: StripeCustomer
    created: bool
    payments_accrued: int


def get_customer_link(session: Session, member_id: str) -> StripeCustomer:
    """The member's Stripe customer link. Raises `StripeNotConfiguredError`,
    `MemberNotFoundError`, `StripeCustomerNotFoundError`."""
    gateway.require_configured()
    members.get_member(session, member_id)
    link = linked_customer(session, member_id)
    if link is None:
        raise StripeCustomerNotFoundError(member_id)
    return link


@retrying
def link_customer(session: Session, *, member_id: str, customer_id: str) -> LinkResult:
    """Link the member to the Stripe customer ``customer_id``. The same link again changes
    nothing (``created`` False). The customer's payments recorded while no member was known
    accrue now (and refunds that waited for them are applied).

    Raises `StripeNotConfiguredError`, `MemberNotFoundError` and
    `StripeCustomerLinkedError` (the member or the customer is linked to another).
    """
    gateway.require_configured()
    with transaction(session):
        members.get_member(session, member_id)
        existing = session.get(StripeCustomer, customer_id, with_for_update=True)
        mine = linked_customer(session, member_id)
        if existing is not None and existing.member_id == member_id:
            return LinkResult(existing, False, 0)
        if existing is not None or mine is not None:
            raise StripeCustomerLinkedError(customer_id, member_id)
        link = StripeCustomer(
            customer_id=customer_id, member_id=member_id, source="api", created_at=clock.now()
        )
        session.add(link)
        session.flush()
        known = accrue_unmatched(session, customer_id=customer_id, member_id=member_id)
        release(session, known)
    return LinkResult(link, True, len(known))


@retrying
def unlink_customer(session: Session, *, member_id: str) -> None:
    """Remove the member's Stripe customer link (later payments of that customer are kept
    for review until it is linked again). Raises `StripeNotConfiguredError`,
    `MemberNotFoundError`, `StripeCustomerNotFoundError`."""
    gateway.require_configured()
    with transaction(session):
        members.get_member(session, member_id)
        link = linked_customer(session, member_id)
        if link is None:
            raise StripeCustomerNotFoundError(member_id)
        session.delete(link)
