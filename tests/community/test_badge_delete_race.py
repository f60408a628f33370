"""An order racing the deletion of a badge it counts towards (a badge never awarded may be
deleted while orders flow): the deletion locks the badge row and commits while the order's
progress upsert waits for it (the progress row the deletion removes, or the key check of
the badge); the order is run again and recorded without the badge, instead of failing on
the progress row's foreign key (a 500)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.community import service
from loyalty.community.models import Badge, BadgeProgress
from loyalty.ledger import service as ledger
from loyalty.ledger.models import Order
from loyalty.members import service as members_service
from tests.community.conftest import make_badge
from tests.support import held_at_commit, in_thread, wait_for, waiting_for_lock

pytestmark = pytest.mark.concurrency


@pytest.mark.parametrize("through", ["service", "api-with-key"])
def test_an_order_racing_the_deletion_of_its_badge_is_recorded(
    app: Flask,
    new_session: Callable[[], Session],
    make_headers: Callable[..., dict[str, str]],
    clock: FrozenClock,
    through: str,
) -> None:
    """Through the service the order's transaction is run again (`retrying`); through the
    API with an Idempotency-Key, the request's."""
    headers = {**make_headers("points:accrue"), "Idempotency-Key": "racing"}
    session = new_session()
    badge = make_badge(
        session,
        name="Big spender",
        rule="spend",
        event_type=None,
        levels=[{"name": "1000", "threshold": 1000, "bonus_points": 5}],
    )
    member, _ = members_service.enroll_member(session, external_id="spender")

    def order(order_id: str) -> ledger.Replayable:
        return ledger.accrue_order(
            new_session(),
            client_id="cli_test",
            order_id=order_id,
            member_id=member.id,
            total=1000,
            currency="USD",
        )

    order("warm")  # the badge is in the process's configuration cache
    delete, delete_outcome, release = held_at_commit(
        app, new_session(), lambda s: service.delete_badge(s, badge_id=badge.id, actor="test")
    )
    body = {"order_id": "racing", "member_id": member.id, "total": 1000, "currency": "USD"}
    racing, racing_outcome = in_thread(
        app,
        lambda: (
            order("racing")
            if through == "service"
            else app.test_client().post("/v1/orders", json=body, headers=headers)
        ),
    )
    watcher = new_session()
    try:
        wait_for(
            lambda: waiting_for_lock(watcher, "%badge_progress%"), "the order to wait for the badge"
        )
    finally:
        watcher.close()
        release.set()
    delete.join()
    racing.join()
    assert delete_outcome == [None]
    (result,) = racing_outcome
    if through == "service":
        assert isinstance(result, ledger.Replayable) and result.created, repr(result)
    else:
        assert result.status_code == 201, result.json
    check = new_session()
    assert check.get(Badge, badge.id) is None
    assert check.scalar(select(func.count()).select_from(BadgeProgress)) == 0
    assert check.scalar(select(func.count()).select_from(Order)) == 2
