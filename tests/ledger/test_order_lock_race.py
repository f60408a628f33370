"""A report of an order that commits while a retry of it waits for the wallet's lock, or in
the gap between the retry's snapshot and its lock: the retry finds the order (the lock
statement's "absent" is trusted only when the wallet row it locked is the one it saw)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from loyalty import demo
from loyalty.clock import FrozenClock
from loyalty.db import get_database
from loyalty.ledger import service
from loyalty.ledger.models import Entry, Order
from loyalty.members import service as members_service
from tests.ledger.conftest import CLIENT, without_a_wallet
from tests.support import (
    behind_a_lock,
    in_the_lock_gap,
    in_thread,
    wait_for,
    waiting_for_lock,
    we_miss_you,
)

pytestmark = pytest.mark.concurrency


def _accrue(session: Session, member_id: str, total: int = 5000) -> service.Replayable:
    return service.accrue_order(
        session, client_id=CLIENT, order_id="same", member_id=member_id, total=total, currency="USD"
    )


def _waiting_for_wallet_lock(session: Session, statement: str = "SELECT wallets.id,") -> bool:
    return waiting_for_lock(session, statement + "%")


def _check_one_order(
    new_session: Callable[[], Session], member_id: str, results: list[Any], pending: int
) -> None:
    assert all(isinstance(r, service.Replayable) for r in results), results
    assert [r.created for r in results] == [True, False], results
    assert results[0].body == results[1].body
    session = new_session()
    assert session.scalar(select(func.count()).select_from(Order)) == 1
    accruals = select(func.count()).select_from(Entry).where(Entry.kind == "accrual")
    assert session.scalar(accruals) == 1
    assert service.get_balance(session, member_id).pending == pending


@pytest.mark.parametrize("in_debt", [False, True], ids=["one-statement", "orm-debt"])
def test_a_retry_waiting_for_the_lock_finds_the_order_committed_meanwhile(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock, in_debt: bool
) -> None:
    session = new_session()
    member, _ = members_service.enroll_member(session, external_id="retry")
    if in_debt:  # the accrual goes through the ORM (its points repay the debt)
        service.update_settings(session, changes={"refund_policy": "allow_negative"}, actor="t")
        service.accrue_order(
            session,
            client_id=CLIENT,
            order_id="old",
            member_id=member.id,
            total=10000,
            currency="USD",
            placed_at=clock.now() - dt.timedelta(days=20),
        )
        service.redeem(session, member_id=member.id, points=80)
        service.refund_order(session, client_id=CLIENT, order_id="old", refund_id="r", amount=10000)
        assert service.get_balance(session, member.id).available == -80
    else:
        service.adjust(session, member_id=member.id, points=1, reason="wallet exists")
    results = list(
        behind_a_lock(
            app,
            new_session,
            lambda s: _accrue(s, member.id, 5000),
            lambda s: _accrue(s, member.id, 5000),
        )
    )
    orders = 1 if not in_debt else 2
    assert all(isinstance(r, service.Replayable) for r in results), results
    assert [r.created for r in results] == [True, False], results
    assert results[0].body == results[1].body
    check = new_session()
    assert check.scalar(select(func.count()).select_from(Order)) == orders
    same = select(func.count()).select_from(Entry).where(Entry.reference_id == "same")
    assert check.scalar(same) == 1
    assert service.get_balance(check, member.id).pending == 50


def test_a_zero_point_retry_waiting_for_the_lock_finds_the_order(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    session = new_session()
    member, _ = members_service.enroll_member(session, external_id="zero")
    service.adjust(session, member_id=member.id, points=1, reason="wallet exists")
    results = list(
        behind_a_lock(
            app,
            new_session,
            lambda s: _accrue(s, member.id, 50),
            lambda s: _accrue(s, member.id, 50),
        )
    )
    assert all(isinstance(r, service.Replayable) for r in results), results
    assert results[0].body["points"] == 0
    assert [r.created for r in results] == [True, False], results
    assert new_session().scalar(select(func.count()).select_from(Order)) == 1


def test_a_retry_of_a_members_first_order_waits_for_the_new_wallet_and_finds_the_order(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    """No wallet yet (a member enrolled before wallets were opened at enrolment): the
    retry's lock statement finds none (the first report's is not committed), so it creates
    the wallet, waits for the first report's insert of it, and then looks for the order."""
    session = new_session()
    member, _ = members_service.enroll_member(session, external_id="new")
    without_a_wallet(session, member.id)
    results = behind_a_lock(
        app,
        new_session,
        lambda s: _accrue(s, member.id, 5000),
        lambda s: _accrue(s, member.id, 5000),
        statement_like="INSERT INTO wallets%",
    )
    _check_one_order(new_session, member.id, list(results), 50)


def test_an_order_committed_between_the_retrys_snapshot_and_its_lock_is_found(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    """The retry's lock statement starts (its snapshot), sleeps before it reaches the wallet
    row; the first report runs whole and commits meanwhile, so the retry never waits: the
    row it then locks is newer than the one its snapshot saw."""
    session = new_session()
    member, _ = members_service.enroll_member(session, external_id="gap")
    service.adjust(session, member_id=member.id, points=1, reason="wallet exists")
    first_result, retry_result = in_the_lock_gap(
        app,
        new_session,
        lambda s: _accrue(s, member.id),
        lambda: _accrue(new_session(), member.id),
    )
    _check_one_order(new_session, member.id, [first_result, retry_result], 50)


@pytest.mark.parametrize("keyed", [False, True], ids=["no-key", "new-key"])
def test_a_retry_over_http_waiting_for_the_lock_replays_the_order(
    app: Flask,
    new_session: Callable[[], Session],
    make_headers: Callable[..., dict[str, str]],
    clock: FrozenClock,
    keyed: bool,
) -> None:
    """The retry comes through the API (with an Idempotency-Key of its own, its accrual is a
    savepoint of the request's transaction) while the first report holds the lock."""
    session = new_session()
    member, _ = members_service.enroll_member(session, external_id="http")
    service.adjust(session, member_id=member.id, points=1, reason="wallet exists")
    headers = make_headers("points:accrue")
    if keyed:
        headers["Idempotency-Key"] = "retry-key"
    body = {"order_id": "same", "member_id": member.id, "total": 5000, "currency": "USD"}
    created, response = behind_a_lock(
        app,
        new_session,
        lambda s: _accrue(s, member.id, 5000),
        lambda _s: app.test_client().post("/v1/orders", json=body, headers=headers),
    )
    assert isinstance(created, service.Replayable), created
    assert response.status_code == 200, response.json
    assert response.json == created.body
    check = new_session()
    assert check.scalar(select(func.count()).select_from(Order)) == 1
    assert service.get_balance(check, member.id).pending == 50


def test_on_sqlite_a_retry_waits_for_the_first_report_and_replays_it(sqlite_app: Flask) -> None:
    """SQLite answers "absent" from the lock statement without a check: the retry's
    transaction takes the write lock (BEGIN IMMEDIATE) before it reads."""
    database = get_database(sqlite_app)
    with sqlite_app.app_context():
        session = database.sessionmaker()
        member, _ = members_service.enroll_member(session, external_id="lite")
        service.adjust(session, member_id=member.id, points=1, reason="wallet exists")
        session.close()
    first = database.sessionmaker()
    ready, release, begun = threading.Event(), threading.Event(), threading.Event()

    def hold(_session: Session) -> None:
        ready.set()
        assert release.wait(30)

    event.listen(first, "before_commit", hold)
    first_thread, first_outcome = in_thread(sqlite_app, lambda: _accrue(first, member.id))
    assert ready.wait(30)
    main = threading.current_thread()

    def note_begin(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if threading.current_thread() is not main and statement == "BEGIN IMMEDIATE":
            begun.set()

    event.listen(database.engine, "before_cursor_execute", note_begin)
    try:
        retry, retry_outcome = in_thread(
            sqlite_app, lambda: _accrue(database.sessionmaker(), member.id)
        )
        assert begun.wait(30)
        time.sleep(0.3)  # the retry is in its busy wait for the write lock
    finally:
        event.remove(database.engine, "before_cursor_execute", note_begin)
        release.set()
    first_thread.join()
    retry.join()
    results = first_outcome + retry_outcome
    assert all(isinstance(r, service.Replayable) for r in results), results
    assert [r.created for r in results] == [True, False], results
    assert results[0].body == results[1].body
    with sqlite_app.app_context():
        check = database.sessionmaker()
        assert check.scalar(select(func.count()).select_from(Order)) == 1
        check.close()
    first.close()


def test_an_order_waiting_for_the_job_that_holds_the_wallet_keeps_both_changes(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    """The due-work job holds the wallet (it activates the first order's points); an order
    of the member waits for it: the wallet the order then locks is the job's (its "absent"
    is not trusted, the wallet changed), and the balances keep both."""
    session = new_session()
    member, _ = members_service.enroll_member(session, external_id="job")
    _accrue(session, member.id, 1000)
    clock.advance(dt.timedelta(days=14, minutes=1))  # the first order's points activate now
    job_session = new_session()
    ready, release = threading.Event(), threading.Event()

    def hold(_session: Session) -> None:
        ready.set()
        assert release.wait(30)

    event.listen(job_session, "before_commit", hold)
    job, job_outcome = in_thread(app, lambda: service.settle_due_batch(job_session, batch_size=10))
    assert ready.wait(30)
    order, order_outcome = in_thread(
        app,
        lambda: service.accrue_order(
            new_session(),
            client_id=CLIENT,
            order_id="second",
            member_id=member.id,
            total=2000,
            currency="USD",
        ),
    )
    watcher = new_session()
    try:
        wait_for(lambda: _waiting_for_wallet_lock(watcher), "the order to wait for the job")
    finally:
        watcher.close()
        release.set()
    job.join()
    order.join()
    assert job_outcome == [1]
    (created,) = order_outcome
    assert isinstance(created, service.Replayable) and created.created, created
    assert created.body["balance"] == {"available": 10, "pending": 20, "held": 0}
    wallet = service.get_balance(new_session(), member.id)
    assert (wallet.available, wallet.pending) == (10, 20)


@pytest.mark.parametrize(
    ("first_total", "upgrade_total", "upgraded", "tier"),
    [(20000, 10000, 100, "Silver"), (30000, 45000, 495, "Gold")],
    ids=["bronze-no-row", "silver-row"],
)
def test_an_order_waiting_for_the_lock_is_priced_with_the_tier_the_first_one_gave(
    app: Flask,
    new_session: Callable[[], Session],
    clock: FrozenClock,
    first_total: int,
    upgrade_total: int,
    upgraded: int,
    tier: str,
) -> None:
    """The wallet's lock reads the member's tier row in its statement, as of the statement's
    start; an order that held the lock meanwhile moved the member up a tier. The one that
    waited is priced with the new tier, whether the member had a tier row before (the
    lowest tier's members have none) or not."""
    session = new_session()
    demo.seed_programme(session)  # Silver x1.1 from 250 lifetime points, Gold x1.25 from 700
    member, _ = members_service.enroll_member(session, external_id="tiered")

    def accrue(session: Session, order_id: str, total: int) -> service.Replayable:
        return service.accrue_order(
            session,
            client_id=CLIENT,
            order_id=order_id,
            member_id=member.id,
            total=total,
            currency="USD",
        )

    accrue(session, "first", first_total)
    upgrade, after = behind_a_lock(
        app,
        new_session,
        lambda s: accrue(s, "upgrade", upgrade_total),
        lambda s: accrue(s, "after", 10000),
    )
    assert isinstance(upgrade, service.Replayable), upgrade
    assert upgrade.body["points"] == upgraded, upgrade.body
    assert isinstance(after, service.Replayable), after
    assert tier in after.body["description"], after.body
    assert after.body["points"] == {"Silver": 110, "Gold": 125}[tier], after.body


def test_an_order_waiting_for_the_lock_sees_the_member_active_after_the_first_one(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    """The wallet's lock reads the member's last activity in its statement (a campaign
    targets lifecycle stages), as of the statement's start; the order that held the lock
    meanwhile made the silent member active again. The one that waited is priced as for an
    active member: no welcome-back bonus a second time."""
    session = new_session()
    member, _ = members_service.enroll_member(session, external_id="silent")
    other, _ = members_service.enroll_member(session, external_id="other")

    def accrue(session: Session, order_id: str, member_id: str = member.id) -> dict[str, Any]:
        return service.accrue_order(
            session,
            client_id=CLIENT,
            order_id=order_id,
            member_id=member_id,
            total=1000,
            currency="USD",
        ).body

    accrue(session, "long-ago")
    clock.advance(dt.timedelta(days=150))  # silent: no activity for 90 to 180 days
    we_miss_you(session, clock.now())
    accrue(session, "warm", other.id)  # the campaigns in this process's cache
    back, again = behind_a_lock(
        app, new_session, lambda s: accrue(s, "back"), lambda s: accrue(s, "again")
    )
    assert isinstance(back, dict) and back["points"] == 110, back  # 10 + the bonus
    assert isinstance(again, dict) and again["points"] == 10, again
