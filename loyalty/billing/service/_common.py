"""What the topics of the billing service share: the actor, the transaction frame, members
found from Stripe objects, and customer links."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty import clock
from loyalty.billing.models import StripeCustomer
from loyalty.db import (
    dialect_insert,
    in_request_transaction,
    request_transaction,
    unit_of_work,
)
from loyalty.members import service as members
from loyalty.members.errors import MemberNotFoundError

# Who the ledger, tiers and rewards record for what Stripe's events did.
ACTOR = "stripe"


@dataclass
class Outcome:
    """What handling one event did: its status, a note, what it waits for (deferred), and
    the keys it made known (``payment:pi_...``), whose deferred events may now run."""

    status: str = "processed"
    detail: str | None = None
    waiting_for: str | None = None
    known: list[str] = field(default_factory=list)


@contextmanager
def transaction(session: Session) -> Iterator[Session]:
    """One transaction around several services' units of work (they become savepoints, so
    one that fails rolls back alone and its error can be recorded); inside a request
    transaction already (an idempotent route), a savepoint of it."""
    if in_request_transaction(session):
        with unit_of_work(session):
            yield session
    else:
        with request_transaction(session):
            yield session


def channel() -> str:
    """The channel whose orders Stripe payments become."""
    return str(current_app.config["STRIPE_CHANNEL"])


def grace() -> dt.timedelta:
    return dt.timedelta(days=int(current_app.config["STRIPE_GRACE_DAYS"]))


def member_exists(session: Session, member_id: str | None) -> bool:
    if not member_id:
        return False
    try:
        members.get_member(session, member_id)
    except MemberNotFoundError:
        return False
    return True


def member_for(
    session: Session, *, member_hint: str | None, customer_id: str | None, source: str
) -> str | None:
    """The member a Stripe object is for: the linked customer's member first, else the member
    its metadata (or Checkout's client_reference_id) names, whose link to the customer is
    then recorded when neither is linked yet. None when no member is known."""
    if customer_id:
        link = session.get(StripeCustomer, customer_id)
        if link is not None:
            return link.member_id
    if not member_exists(session, member_hint):
        return None
    assert member_hint is not None
    if customer_id and linked_customer(session, member_hint) is None:
        # A racing event may link them first (or link either elsewhere): then nothing is done.
        session.execute(
            dialect_insert(session)(StripeCustomer)
            .values(
                customer_id=customer_id,
                member_id=member_hint,
                source=source,
                created_at=clock.now(),
            )
            .on_conflict_do_nothing()
        )
    return member_hint


def linked_customer(session: Session, member_id: str) -> StripeCustomer | None:
    return session.scalar(select(StripeCustomer).where(StripeCustomer.member_id == member_id))
