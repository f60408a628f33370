"""An accrual's upgrade in one statement (86ab780) inside transactions and savepoints that
roll back and run again in the same session, and next to other tier writes of the same
transaction (probes of a review session; the two kept references failed before the fix)."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.db import request_transaction, unit_of_work
from loyalty.events.models import OutboxEvent
from loyalty.members import service as members_service
from loyalty.tiers import service
from loyalty.tiers.models import MemberTier, TierChange
from tests.ledger.conftest import order
from tests.tiers.conftest import DAY, make_ladder


class RolledBackError(Exception):
    pass


def _history(session: Session, member_id: str) -> list[tuple[str, str | None, str | None]]:
    return [
        (c.kind, c.from_code, c.to_code)
        for c in session.scalars(
            select(TierChange).where(TierChange.member_id == member_id).order_by(TierChange.id)
        )
    ]


def _told(session: Session, member_id: str) -> list[str]:
    return list(
        session.scalars(
            select(OutboxEvent.type)
            .where(OutboxEvent.member_id == member_id, OutboxEvent.type.like("tier.%"))
            .order_by(OutboxEvent.seq)
        )
    )


def test_two_upgrades_in_one_request_transaction(session: Session, clock: FrozenClock) -> None:
    """Two orders in one request transaction (savepoints each): silver by the one statement
    (row created), gold through the locked path on the same row object."""
    make_ladder(session)
    member_id = members_service.enroll_member(session, external_id="r5-two")[0].id
    with request_transaction(session):
        order(session, member_id, 60000, order_id="r5-two-1")
        order(session, member_id, 50000, order_id="r5-two-2")
    session.expire_all()
    row = session.get(MemberTier, member_id)
    assert row is not None and row.tier_code == "gold"
    assert _history(session, member_id) == [
        ("upgrade", "bronze", "silver"),
        ("upgrade", "silver", "gold"),
    ]
    assert _told(session, member_id) == ["tier.upgraded", "tier.upgraded"]


@pytest.mark.parametrize("keep_reference", [False, True])
def test_upgrade_in_a_savepoint_rolled_back_then_done_again(
    session: Session, clock: FrozenClock, keep_reference: bool
) -> None:
    """Inside a request transaction, an order's savepoint upgrades the member by the one
    statement (its row created, the MemberTier attached with make_transient_to_detached),
    then the savepoint rolls back; the same order again in the same transaction (as a
    retry would) must upgrade once. ``keep_reference``: something (a traceback's frames
    in a reference cycle, a caller) still refers to the first MemberTier object."""
    make_ladder(session)
    member_id = members_service.enroll_member(session, external_id=f"r5-rb-{keep_reference}")[0].id
    kept = []
    with request_transaction(session):
        with pytest.raises(RolledBackError):
            with unit_of_work(session):
                order(session, member_id, 60000, order_id=f"r5-rb-{keep_reference}")
                if keep_reference:
                    kept.append(service._tier_row(session, member_id))
                raise RolledBackError
        order(session, member_id, 60000, order_id=f"r5-rb-{keep_reference}")
    session.expire_all()
    row = session.get(MemberTier, member_id)
    assert row is not None and row.tier_code == "silver"
    assert _history(session, member_id) == [("upgrade", "bronze", "silver")]
    assert _told(session, member_id) == ["tier.upgraded"]


@pytest.mark.parametrize("keep_reference", [False, True])
def test_upgrade_rolled_back_then_retried_in_the_same_session(
    session: Session, clock: FrozenClock, keep_reference: bool
) -> None:
    """A whole transaction (as @retrying / the request retry after a deadlock) that upgraded
    by the one statement rolls back; the same session runs it again."""
    make_ladder(session)
    member_id = members_service.enroll_member(session, external_id=f"r5-rt-{keep_reference}")[0].id
    kept = []
    with pytest.raises(RolledBackError):
        with request_transaction(session):
            order(session, member_id, 60000, order_id=f"r5-rt-{keep_reference}")
            if keep_reference:
                kept.append(service._tier_row(session, member_id))
            raise RolledBackError
    with request_transaction(session):
        order(session, member_id, 60000, order_id=f"r5-rt-{keep_reference}")
    session.expire_all()
    row = session.get(MemberTier, member_id)
    assert row is not None and row.tier_code == "silver"
    assert _history(session, member_id) == [("upgrade", "bronze", "silver")]


def test_upgrade_after_paid_tier_in_the_same_transaction(
    session: Session, clock: FrozenClock
) -> None:
    """A paid tier granted and an upgrading order in one request transaction: the order's
    upgrade must keep the paid tier and its due moment."""
    make_ladder(session)
    member_id = members_service.enroll_member(session, external_id="r5-paid")[0].id
    order(session, member_id, 60000, order_id="r5-paid-0")  # silver, the row exists
    clock.advance(DAY)
    until = clock.now() + 3 * DAY
    with request_transaction(session):
        service.grant_paid_within(
            session, member_id=member_id, tier="gold", until=until, reference="sub_1", actor="b"
        )
        order(session, member_id, 50000, order_id="r5-paid-1")
    session.expire_all()
    row = session.get(MemberTier, member_id)
    assert row is not None
    assert (row.tier_code, row.paid_code, row.paid_until) == ("gold", "gold", until)
    assert row.due_at == min(m for m in (until, row.review_at) if m is not None)
