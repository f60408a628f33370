"""An order racing the deletion of the tier it would move its member into (a tier nobody
holds may be deleted while orders flow): the deletion locks the tier row and commits while
the order's upgrade waits to lock that row; the order then finds the tier gone and moves the
member by the ladder without it, rather than naming the deleted tier (a foreign key error)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.ledger import service as ledger
from loyalty.members import service as members_service
from loyalty.tiers import service
from tests.support import behind_a_lock, held_at_commit, in_thread
from tests.tiers.conftest import make_ladder

pytestmark = pytest.mark.concurrency

# An order's statement holding the tier it moves its member into.
HOLDING_THE_TIER = "%FROM tiers%FOR KEY SHARE%"


@pytest.mark.parametrize("through", ["service", "api-with-key"])
def test_an_order_racing_the_deletion_of_its_new_tier_is_recorded(
    app: Flask,
    new_session: Callable[[], Session],
    make_headers: Callable[..., dict[str, str]],
    clock: FrozenClock,
    through: str,
) -> None:
    headers = {**make_headers("points:accrue"), "Idempotency-Key": "racing"}
    session = new_session()
    make_ladder(session)  # bronze 0, silver 500, gold 1000 points
    member, _ = members_service.enroll_member(session, external_id="climber")

    def order(order_id: str, total: int) -> ledger.Replayable:
        return ledger.accrue_order(
            new_session(),
            client_id="cli_test",
            order_id=order_id,
            member_id=member.id,
            total=total,
            currency="USD",
        )

    order("warm", 10000)  # 100 points, bronze; the ladder is in the process's cache
    body = {"order_id": "racing", "member_id": member.id, "total": 150000, "currency": "USD"}
    deleted, result = behind_a_lock(
        app,
        new_session,
        lambda s: service.delete_tier(s, code="gold", actor="test"),
        lambda s: (
            order("racing", 150000)  # 1,600 points in all: gold, while the ladder had it
            if through == "service"
            else app.test_client().post("/v1/orders", json=body, headers=headers)
        ),
        statement_like=HOLDING_THE_TIER,
    )
    assert deleted is None
    if through == "service":
        assert isinstance(result, ledger.Replayable) and result.created, repr(result)
    else:
        assert result.status_code == 201, result.json
    view = service.get_member_tier(new_session(), member.id)
    assert view.tier is not None and view.tier.code == "silver"


def test_members_moving_into_the_same_tier_do_not_wait_for_each_other(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    """The tier an order moves its member into is held against deletion until the order
    commits (a key-share lock): another member's order into that tier meanwhile shares it."""
    session = new_session()
    make_ladder(session)  # bronze 0, silver 500, gold 1000 points
    bob, _ = members_service.enroll_member(session, external_id="bob")
    carol, _ = members_service.enroll_member(session, external_id="carol")

    def into_silver(s: Session, member_id: str) -> ledger.Replayable:
        return ledger.accrue_order(
            s,
            client_id="cli_test",
            order_id=f"{member_id}-silver",
            member_id=member_id,
            total=60000,  # 600 points
            currency="USD",
        )

    holder, held, release = held_at_commit(app, new_session(), lambda s: into_silver(s, bob.id))
    try:
        other, outcome = in_thread(app, lambda: into_silver(new_session(), carol.id))
        other.join(10)
        # Done while the first holds its locks (not a 503 after waiting for them).
        assert not other.is_alive() and isinstance(outcome[0], ledger.Replayable), outcome
        # The tier is held against deletion all the same.
        probe = new_session()
        with pytest.raises(OperationalError), probe.begin():
            probe.execute(text("SET LOCAL lock_timeout = '100ms'"))
            probe.execute(text("SELECT 1 FROM tiers WHERE code = 'silver' FOR UPDATE"))
    finally:
        release.set()
        holder.join()
        other.join()
    assert isinstance(held[0], ledger.Replayable), held
    for member_id in (bob.id, carol.id):
        view = service.get_member_tier(new_session(), member_id)
        assert view.tier is not None and view.tier.code == "silver"
