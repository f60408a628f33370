"""Helpers shared by the area test packages: the test clock, the ledger invariants checked
after each test of an area that moves points, and threads racing on real connections."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from flask import Flask
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock, use_clock
from loyalty.db import get_database
from loyalty.earning import service as earning_service
from loyalty.ledger.invariants import verify

START = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
T = TypeVar("T")


@pytest.fixture
def clock(app: Flask) -> Iterator[FrozenClock]:
    """The app's clock, frozen at `START` and moved by the test."""
    frozen = FrozenClock(START)
    use_clock(app, frozen)
    yield frozen
    use_clock(app, None)


@pytest.fixture(autouse=True)
def _invariants_hold(app: Flask) -> Iterator[None]:
    """After every test of the area, whatever it did, the ledger's invariants hold (import
    this fixture into an area's conftest to check them there)."""
    yield
    with app.app_context():
        session = get_database(app).sessionmaker()
        try:
            violations = verify(session)
        finally:
            session.close()
    assert violations == [], "\n".join(str(v) for v in violations)


@pytest.fixture
def new_session(app: Flask) -> Iterator[Callable[[], Session]]:
    """Sessions on connections of their own, committing for real (concurrency tests)."""
    opened: list[Session] = []

    def make() -> Session:
        session = get_database(app).sessionmaker()
        opened.append(session)
        return session

    with app.app_context():
        yield make
    for session in opened:
        session.close()


def race(app: Flask, count: int, work: Callable[[int, Session], T]) -> list[T | Exception]:
    """Run ``work`` in ``count`` threads released together, each with its own session;
    returns what each returned or raised."""
    barrier = threading.Barrier(count)

    def run(index: int) -> T | Exception:
        with app.app_context():
            session = get_database(app).sessionmaker()
            try:
                barrier.wait()
                return work(index, session)
            except Exception as error:  # noqa: BLE001 - the test inspects what each got
                return error
            finally:
                session.close()

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def in_thread(app: Flask, work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Start ``work`` in a thread (in an app context); the list gets what it returned or
    raised once the thread is joined."""
    outcome: list[Any] = []

    def run() -> None:
        with app.app_context():
            try:
                outcome.append(work())
            except BaseException as error:  # reported by the test, not lost in the thread
                outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def held_at_commit(
    app: Flask, session: Session, work: Callable[[Session], Any]
) -> tuple[threading.Thread, list[Any], threading.Event]:
    """Run ``work(session)`` in a thread and stop it at its commit, its locks held, until the
    returned event is set; returns once it is there (the thread, its outcome as `in_thread`
    gives it, the event)."""
    ready, release = threading.Event(), threading.Event()

    def hold(_session: Session) -> None:
        ready.set()
        assert release.wait(30)

    event.listen(session, "before_commit", hold)
    thread, outcome = in_thread(app, lambda: work(session))
    assert ready.wait(30), "the work never reached its commit"
    return thread, outcome, release


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds (30 s at most)."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def waiting_for_lock(session: Session, query_like: str) -> bool:
    """Whether another PostgreSQL connection waits for a lock in a statement whose text is
    LIKE ``query_like``."""
    session.rollback()  # pg_stat_activity is read once per transaction
    return bool(
        session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE :query_like AND pid <> pg_backend_pid()"
            ),
            {"query_like": query_like},
        )
    )


def behind_a_lock(
    app: Flask,
    new_session: Callable[[], Session],
    first: Callable[[Session], Any],
    then: Callable[[Session], Any],
    *,
    meanwhile: Callable[[], Any] | None = None,
    statement_like: str = "SELECT wallets.id,%",
) -> tuple[Any, Any]:
    """Run ``first`` up to its commit (its locks held), then ``then`` until it waits for a
    lock in a statement LIKE ``statement_like`` (the wallet's lock by default); run
    ``meanwhile``; let ``first`` commit. Returns what each returned or raised, on sessions of
    their own."""
    holder, held, release = held_at_commit(app, new_session(), first)
    waiter, waited = in_thread(app, lambda: then(new_session()))
    watcher = new_session()
    try:
        wait_for(lambda: waiting_for_lock(watcher, statement_like), "the second to wait")
        if meanwhile is not None:
            meanwhile()
    finally:
        watcher.close()
        release.set()
    holder.join()
    waiter.join()
    return held[0], waited[0]


def we_miss_you(session: Session, now: dt.datetime) -> None:
    """The demo's "We miss you" campaign, running around ``now``: 100 points on the order of
    a silent or churned member (a campaign that targets lifecycle stages)."""
    earning_service.create_campaign(
        session,
        actor="test",
        name="We miss you",
        starts_at=now - dt.timedelta(days=1),
        ends_at=now + dt.timedelta(days=30),
        target="stages",
        target_values=["silent", "churned"],
        bonus_points=100,
    )


def in_the_lock_gap(
    app: Flask,
    new_session: Callable[[], Session],
    order: Callable[[Session], Any],
    meanwhile: Callable[[], Any],
    pause: float = 2.0,
) -> tuple[Any, Any]:
    """Run ``order`` in a thread with the statement of its wallet's lock stretched (a
    ``pg_sleep`` after the statement took its snapshot, before it reaches the wallet row),
    and ``meanwhile`` here during that sleep; returns what ``meanwhile`` and ``order`` gave
    (or raised). Fails unless ``meanwhile`` ended inside the gap."""
    engine = get_database(app).engine
    started = threading.Event()
    moments: dict[str, float] = {}
    main = threading.current_thread()

    def slow_lock(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> Any:
        if (
            threading.current_thread() is not main
            and "FOR UPDATE OF wallets" in statement
            and "xmin" in statement
            and "sent" not in moments
        ):
            statement = statement.replace(
                "WHERE wallets.member_id =",
                f"WHERE pg_sleep({pause}) IS NOT NULL AND wallets.member_id =",
                1,
            )
            assert "pg_sleep" in statement, statement
            moments["sent"] = time.monotonic()
            started.set()
        return statement, parameters

    event.listen(engine, "before_cursor_execute", slow_lock, retval=True)
    try:
        thread, outcome = in_thread(app, lambda: order(new_session()))
        assert started.wait(30)
        time.sleep(0.2)  # the order's statement has its snapshot and sleeps
        done = meanwhile()
        moments["committed"] = time.monotonic()
        thread.join()
    finally:
        event.remove(engine, "before_cursor_execute", slow_lock)
    assert moments["committed"] - moments["sent"] < pause, moments  # inside the gap
    return done, outcome[0]
