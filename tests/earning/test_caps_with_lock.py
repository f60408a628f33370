"""The caps' points read with the accrual's wallet lock: for the periods of the member's time
zone as the process last saw it (a wrong guess is read again), and only when as current as
the lock (an order that held the lock meanwhile counts). These commit for real: the
process's configuration cache, which says the programme has caps, is filled only by
committed configuration."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.db import get_database
from loyalty.earning import service
from loyalty.ledger import service as ledger_service
from loyalty.members import service as members_service
from tests.ledger.conftest import CLIENT, order
from tests.support import behind_a_lock

pytestmark = pytest.mark.concurrency

CAPS_READ = "SELECT coalesce(sum(CASE WHEN (orders.placed_at >="


@contextmanager
def statements(app: Flask) -> Iterator[list[str]]:
    seen: list[str] = []
    engine = get_database(app).engine

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


@pytest.mark.parametrize("learnt", [False, True], ids=["zone-unknown", "zone-learnt"])
def test_the_daily_cap_counts_the_members_local_day(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock, learnt: bool
) -> None:
    session = new_session()
    service.update_earning_settings(session, changes={"daily_cap": 150}, actor="t")
    someone, _ = members_service.enroll_member(session, external_id="someone")
    new_york, _ = members_service.enroll_member(
        session, external_id="ny", timezone="America/New_York"
    )
    order(session, someone.id, 100, order_id="warm")  # the rules, with the cap, in the cache
    order(session, new_york.id, 0, order_id="wallet")  # an order that earns nothing
    clock.set(dt.datetime(2026, 3, 11, 3, 0, tzinfo=dt.UTC))  # 10 March, 23:00 in New York
    morning = dt.datetime(2026, 3, 10, 15, 0, tzinfo=dt.UTC)  # 10 March, 11:00 in New York
    assert (
        order(session, new_york.id, 10000, order_id="morning", placed_at=morning)["points"] == 100
    )
    assert service._ZONES[new_york.id] == "America/New_York"  # the lock read it
    if not learnt:  # another process: it guesses UTC, where the evening is another day
        service._ZONES.pop(new_york.id)
    with statements(app) as seen:
        # The same day in New York (not in UTC): 50 points left of the day's 150.
        assert order(session, new_york.id, 10000, order_id="evening")["points"] == 50
    # Learnt, the caps' points came with the lock; guessed wrong, read on their own.
    separate = [statement for statement in seen if statement.startswith(CAPS_READ)]
    assert len(separate) == (0 if learnt else 1), seen
    assert service._ZONES[new_york.id] == "America/New_York"
    assert order(session, new_york.id, 10000, order_id="night")["points"] == 0


def test_an_order_waiting_for_the_lock_counts_the_first_ones_points_towards_the_cap(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    session = new_session()
    service.update_earning_settings(session, changes={"daily_cap": 150}, actor="t")
    someone, _ = members_service.enroll_member(session, external_id="someone")
    capped, _ = members_service.enroll_member(session, external_id="capped")
    order(session, someone.id, 100, order_id="warm")  # the rules, with the cap, in the cache
    order(session, capped.id, 0, order_id="wallet")  # the wallet exists: the lock statement runs
    first, following = behind_a_lock(
        app,
        new_session,
        lambda s: order(s, capped.id, 10000, order_id="first")["points"],
        lambda s: order(s, capped.id, 10000, order_id="next")["points"],
    )
    assert first == 100
    assert following == 50  # 150 - the first's 100


def test_an_order_waiting_for_a_refund_counts_the_points_it_took_back(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    """The refund that holds the lock takes back points of today's order: the order that
    waited has that much more room under the cap (the refund changed the wallet, so the
    caps' points the lock read along are not taken)."""
    session = new_session()
    service.update_earning_settings(session, changes={"daily_cap": 150}, actor="t")
    someone, _ = members_service.enroll_member(session, external_id="someone")
    capped, _ = members_service.enroll_member(session, external_id="capped")
    order(session, someone.id, 100, order_id="warm")  # the rules, with the cap, in the cache
    assert order(session, capped.id, 10000, order_id="first")["points"] == 100
    reversed_points, following = behind_a_lock(
        app,
        new_session,
        lambda s: ledger_service.refund_order(
            s, client_id=CLIENT, order_id="first", refund_id="r", amount=10000
        ).body["points_reversed"],
        lambda s: order(s, capped.id, 20000, order_id="next")["points"],
    )
    assert reversed_points == 100
    assert following == 150  # the whole day's cap: the first order's points are back
