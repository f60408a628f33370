"""The budget charge at the commit under real concurrency (a review of 8f0a875)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.db import get_database
from loyalty.earning import service
from tests.campaign_charge.helpers import (
    accrue,
    assert_exact,
    campaign,
    changer,
    members,
    stopped_at,
)
from tests.support import in_thread, race

pytestmark = pytest.mark.concurrency
WORKERS = 12


def _session(app: Flask) -> Session:
    return get_database(app).sessionmaker()


def test_race_one_budget_runs_out_mid_race(app: Flask, clock: FrozenClock) -> None:
    with app.app_context():
        s = _session(app)
        cid = campaign(s, clock, "One", budget=250)
        s.close()
        ids = members(app, "one", WORKERS)
        points = race(app, WORKERS, lambda i, s: accrue(s, ids[i], f"one-{i}"))
        assert all(isinstance(p, int) for p in points), points
        assert sum(points) == WORKERS * 100 + 250  # type: ignore[arg-type]
        assert assert_exact(app, [cid])[cid] == (250, 250)


def test_race_two_budgets_on_one_order(app: Flask, clock: FrozenClock) -> None:
    with app.app_context():
        s = _session(app)
        a = campaign(s, clock, "A", budget=350)
        b = campaign(s, clock, "B", budget=100, multiplier=None, bonus=30)
        s.close()
        ids = members(app, "two", WORKERS)
        points = race(app, WORKERS, lambda i, s: accrue(s, ids[i], f"two-{i}"))
        assert all(isinstance(p, int) for p in points), points
        seen = assert_exact(app, [a, b])
        assert seen[a] == (350, 350) and seen[b] == (100, 100), seen
        assert sum(points) == WORKERS * 100 + 350 + 100  # type: ignore[arg-type]


def test_race_fixed_bonus_not_a_divisor(app: Flask, clock: FrozenClock) -> None:
    with app.app_context():
        s = _session(app)
        cid = campaign(s, clock, "Bonus", budget=200, multiplier=None, bonus=70)
        s.close()
        ids = members(app, "bon", WORKERS)
        points = race(app, WORKERS, lambda i, s: accrue(s, ids[i], f"bon-{i}"))
        assert all(isinstance(p, int) for p in points), points
        assert assert_exact(app, [cid])[cid] == (200, 200)


def test_race_few_members_many_orders(app: Flask, clock: FrozenClock) -> None:
    """Orders of the same members queue on their wallets; the budget runs out."""
    with app.app_context():
        s = _session(app)
        cid = campaign(s, clock, "Few", budget=730)
        unb = campaign(s, clock, "Unbudgeted", budget=None, multiplier=None, bonus=5)
        s.close()
        ids = members(app, "few", 3)

        def work(i: int, s: Session) -> list[int]:
            return [accrue(s, ids[i % 3], f"few-{i}-{k}", 5000) for k in range(3)]

        results = race(app, WORKERS, work)
        assert all(isinstance(r, list) for r in results), results
        seen = assert_exact(app, [cid, unb])
        assert seen[cid] == (730, 730), seen


@pytest.mark.parametrize(
    "changes",
    [{"budget": 5000}, {"budget": 350}, {"budget": None}, {"active": False}],
    ids=["raise", "lower", "remove", "pause"],
)
def test_race_orders_while_a_manager_changes_the_campaign(
    app: Flask, clock: FrozenClock, changes: dict[str, Any]
) -> None:
    with app.app_context():
        s = _session(app)
        cid = campaign(s, clock, "Changing", budget=600)
        s.close()
        ids = members(app, "chg", WORKERS)

        def work(i: int, s: Session) -> Any:
            if i == 0:
                return changer(cid, changes)(s)
            return [accrue(s, ids[i], f"chg-{i}-{k}") for k in range(2)]

        results = race(app, WORKERS, work)
        assert not any(isinstance(r, Exception) for r in results), results
        assert_exact(app, [cid])


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"budget": 5000}, 200),
        ({"budget": 150}, 200),
        ({"budget": 50}, 150),
        ({"budget": None}, 200),
        ({"active": False}, 100),
        ("end", 100),
    ],
    ids=["raise", "lower-room", "lower-noroom", "remove", "pause", "end"],
)
def test_a_manager_change_between_pricing_and_commit(
    app: Flask,
    new_session: Callable[[], Session],
    clock: FrozenClock,
    changes: Any,
    expected: int,
) -> None:
    """The order is priced (fast path) and stopped just before its charge at the commit; a
    manager changes the campaign and commits; the order goes on."""
    setup = new_session()
    cid = campaign(setup, clock, "InFlight", budget=1000)
    (mid,) = members(app, "flight", 1)
    setup.close()
    if changes == "end":
        import datetime as dt

        changes = {"ends_at": clock.now() - dt.timedelta(minutes=1)}
    held = new_session()
    there, go = stopped_at(held, "UPDATE campaigns")
    thread, outcome = in_thread(app, lambda: accrue(held, mid, "flight-1"))
    try:
        assert there.wait(30), "never reached the charge"
        changer(cid, changes)(new_session())
    finally:
        go.set()
        thread.join()
    assert outcome == [expected], outcome
    assert_exact(app, [cid])
    # And a later order of this process still gets it right.
    (other,) = members(app, "flight-after", 1)
    after = accrue(new_session(), other, "flight-2")
    assert_exact(app, [cid])
    assert after >= 100


def test_tight_set_after_raise_then_race(app: Flask, clock: FrozenClock) -> None:
    """A process that found the budget tight, then the manager raises it; a race follows."""
    with app.app_context():
        s = _session(app)
        cid = campaign(s, clock, "Tight", budget=150)
        s.close()
        ids = members(app, "tight", WORKERS)
        first = race(app, 4, lambda i, s: accrue(s, ids[i], f"tight-{i}"))
        assert all(isinstance(p, int) for p in first), first
        assert (cid, 150) in service._TIGHT or True
        s = _session(app)
        changer(cid, {"budget": 550})(s)
        s.close()
        second = race(app, 8, lambda i, s: accrue(s, ids[4 + i], f"tight-{4 + i}"))
        assert all(isinstance(p, int) for p in second), second
        assert assert_exact(app, [cid])[cid] == (550, 550)


def test_a_budget_changed_before_each_attempts_charge(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    """A manager (or an automation topping the budget up) changes the budget between each
    attempt's pricing and its charge: every attempt is priced with a budget no longer
    current. Before 8f0a875 the charge found the changed budget and priced
    again with the row locked (one attempt); now each attempt runs again."""
    setup = new_session()
    cid = campaign(setup, clock, "Topped up", budget=1000)
    (mid,) = members(app, "topped", 1)
    setup.close()
    engine = get_database(app).engine
    order_thread: list[int] = []
    changes: list[int] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if (
            order_thread
            and threading.get_ident() == order_thread[0]
            and statement.startswith("UPDATE campaigns")
            and len(changes) < 5
        ):
            budget = 1000 + 10 * (len(changes) + 1)
            changes.append(budget)
            done, _ = in_thread(app, lambda: changer(cid, {"budget": budget})(new_session()))
            done.join()

    event.listen(engine, "before_cursor_execute", before)

    def run() -> int:
        order_thread.append(threading.get_ident())
        return accrue(new_session(), mid, "topped-1")

    try:
        thread, outcome = in_thread(app, run)
        thread.join()
    finally:
        event.remove(engine, "before_cursor_execute", before)
    assert_exact(app, [cid])
    assert outcome == [200], (outcome, changes)


def test_race_orders_while_a_manager_tops_the_budget_up(app: Flask, clock: FrozenClock) -> None:
    """One thread raises the budget 30 times in a row while 11 place 4 orders each: no
    order answers busy (the old charge priced a changed budget again under the lock)."""
    with app.app_context():
        s = _session(app)
        cid = campaign(s, clock, "Automation", budget=300)
        s.close()
        ids = members(app, "auto", WORKERS)

        def work(i: int, s: Session) -> Any:
            if i == 0:
                for k in range(30):
                    changer(cid, {"budget": 300 + 50 * (k + 1)})(s)
                return "manager"
            out: list[Any] = []
            for k in range(4):
                try:
                    out.append(accrue(s, ids[i], f"auto-{i}-{k}"))
                except Exception as error:  # noqa: BLE001
                    out.append(f"{error!r} <- {error.__cause__!r}")
            return out

        results = race(app, WORKERS, work)
        errors = [r for rs in results[1:] for r in rs if not isinstance(r, int)]  # type: ignore[union-attr]
        assert_exact(app, [cid])
        assert not isinstance(results[0], Exception), results[0]
        assert errors == [], errors


def test_pause_and_resume_while_orders_race(app: Flask, clock: FrozenClock) -> None:
    """Paused and resumed (same budget, now in `_TIGHT` for this process): orders after the
    resume still get the campaign, exactly, charging at once."""
    with app.app_context():
        s = _session(app)
        cid = campaign(s, clock, "Resumed", budget=800)
        s.close()
        ids = members(app, "res", WORKERS)

        def work(i: int, s: Session) -> Any:
            if i == 0:
                changer(cid, {"active": False})(s)
                changer(cid, {"active": True})(s)
                return "manager"
            return [accrue(s, ids[i], f"res-{i}-{k}") for k in range(2)]

        results = race(app, WORKERS, work)
        assert not any(isinstance(r, Exception) for r in results), results
        assert_exact(app, [cid])
        after = race(app, 4, lambda i, s: accrue(s, ids[i], f"res-after-{i}"))
        assert all(isinstance(p, int) for p in after), after
        seen = assert_exact(app, [cid])
        assert seen[cid][0] <= 800
