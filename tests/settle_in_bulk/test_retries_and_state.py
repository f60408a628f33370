"""Review 8: the statement failing midway and run again; what the session holds after it;
the outbox rows' ids."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.events.models import OutboxEvent
from loyalty.ledger import service
from loyalty.ledger.models import Entry, Lot
from tests.ledger.conftest import order, settings
from tests.ledger.test_reconciliation import spend
from tests.referrals.conftest import make_member, referral_of, terms
from tests.settle_in_bulk.helpers import (
    DAY,
    assert_same,
    in_one_statement,
    last_seq,
    statements,
    wallet_of,
)

CROCKFORD = re.compile(r"^evt_[0-9A-HJKMNP-TV-Z]{26}$")


@contextmanager
def failing_once(session: Session, *, after_bulk: bool = False) -> Iterator[list[str]]:
    """The job's statement (or, ``after_bulk``, the first statement after it) fails once
    with a deadlock, its data-modifying clauses having run."""
    engine = session.get_bind().engine
    session.execute(select(func.now()))
    session.commit()
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE OR REPLACE FUNCTION r8_fail() RETURNS int AS $$ BEGIN "
            "RAISE EXCEPTION 'r8 deadlock' USING ERRCODE = '40P01'; END $$ LANGUAGE plpgsql"
        )
    state = {"failed": False, "seen_bulk": False}
    log: list[str] = []

    def rewrite(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> tuple[str, Any]:
        if state["failed"]:
            return statement, parameters
        if "outbox_told" in statement:
            if not after_bulk:
                state["failed"] = True
                log.append("failed the statement")
                at = statement.rindex("AS activated")
                statement = (
                    statement[:at]
                    + "AS activated, r8_fail() AS boom"
                    + statement[at + len("AS activated") :]
                )
                return statement, parameters
            state["seen_bulk"] = True
            return statement, parameters
        if after_bulk and state["seen_bulk"]:
            state["failed"] = True
            log.append(f"failed after: {statement[:60]}")
            return "SELECT r8_fail()", None
        return statement, parameters

    event.listen(engine, "before_cursor_execute", rewrite, retval=True)
    try:
        yield log
    finally:
        event.remove(engine, "before_cursor_execute", rewrite)


def _twin_history(session: Session, clock: FrozenClock, twins: tuple[str, ...]) -> None:
    settings(session, expiry_policy="rolling", expiry_months=1, pending_days=14)
    for twin in twins:
        order(session, twin, 10000, order_id=f"{twin}-old", placed_at=clock.now() - 20 * DAY)
    clock.advance(20 * DAY)
    for twin in twins:
        spend(session, twin, 30)
        order(session, twin, 5000, order_id=f"{twin}-late")
    clock.advance(60 * DAY)


def _retry_case(
    session: Session, member: Callable[..., str], clock: FrozenClock, after_bulk: bool
) -> None:
    terms(session, referrer_points=500, referee_points=200, min_order_total=5000)
    ann = make_member(session)
    alone_ref, batched_ref = make_member(session, referrer=ann), make_member(session, referrer=ann)
    alone, batched = alone_ref.id, batched_ref.id
    _twin_history(session, clock, (alone, batched))
    other = member()  # a wallet whose hold times out: not plainly due (`_settle`)
    order(session, other, 10000, placed_at=clock.now() - 20 * DAY)
    service.place_hold(session, member_id=other, points=10, expires_in=60)
    clock.advance(dt.timedelta(minutes=5))
    since = last_seq(session)
    service.settle_wallet(session, wallet_id=wallet_of(session, alone).id, actor="jobs")
    with failing_once(session, after_bulk=after_bulk) as log, statements(session) as sent:
        assert service.settle_due_batch(session, batch_size=50) == 2
    assert log, "the failure was injected"
    assert sum("outbox_told" in s for s in sent) == 2  # ran again
    assert_same(session, alone, batched, since)
    assert referral_of(session, batched).status == "qualified"
    assert referral_of(session, alone).status == "qualified"
    assert service.get_balance(session, ann.id).available == 1000


def test_the_statement_failing_midway_is_run_again_once(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    _retry_case(session, member, clock, after_bulk=False)


def test_a_failure_after_the_statement_in_its_batch_runs_it_again_once(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    _retry_case(session, member, clock, after_bulk=True)


def test_what_the_session_holds_after_the_statement_is_fresh(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    settings(session, expiry_policy="rolling", expiry_months=1, pending_days=14)
    a, b = member(), member()
    for m in (a, b):
        order(session, m, 10000, placed_at=clock.now() - 20 * DAY)
        order(session, m, 3000)
    clock.advance(60 * DAY)
    held_lots = session.scalars(select(Lot).order_by(Lot.id)).all()  # loaded, kept
    held_wallets = [wallet_of(session, a), wallet_of(session, b)]
    before = [(lot.remaining, lot.activated_at, lot.expired_at) for lot in held_lots]
    assert service.settle_due_batch(session, batch_size=50) == 2
    # the same objects, read again in the same session
    after = [(lot.remaining, lot.activated_at, lot.expired_at) for lot in held_lots]
    assert after != before
    fresh = session.execute(
        select(Lot.remaining, Lot.activated_at, Lot.expired_at).order_by(Lot.id)
    ).all()
    assert after == [tuple(r) for r in fresh]
    for wallet, m in zip(held_wallets, (a, b), strict=True):
        report = service.get_balance(session, m)
        assert (wallet.available, wallet.pending) == (report.available, report.pending)
    # a later change in the same session starts from the statement's balances
    order(session, a, 2000, placed_at=clock.now() - 20 * DAY)
    last = session.scalars(
        select(Entry).where(Entry.member_id == a).order_by(Entry.id.desc())
    ).first()
    assert last is not None
    assert last.balance_available == service.get_balance(session, a).available


def test_outbox_ids_are_crockford_ulids_unique_and_time_prefixed(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    settings(session, expiry_policy="rolling", expiry_months=1, pending_days=14)
    members = [member() for _ in range(40)]
    for m in members:
        order(session, m, 10000, placed_at=clock.now() - 20 * DAY)
        order(session, m, 3000)
    clock.advance(60 * DAY)
    since = last_seq(session)
    with statements(session) as sent:
        while service.settle_due_batch(session, batch_size=50):
            pass
    assert in_one_statement(sent)
    rows = session.execute(
        select(OutboxEvent.id, OutboxEvent.seq)
        .where(OutboxEvent.seq > since)
        .order_by(OutboxEvent.seq)
    ).all()
    ids = [r.id for r in rows]
    assert len(ids) == 80 and len(set(ids)) == len(ids)
    assert all(CROCKFORD.match(i) for i in ids), [i for i in ids if not CROCKFORD.match(i)]
    # time-ordered: every id sorts after the ids written before the batch
    earlier = session.scalars(select(OutboxEvent.id).where(OutboxEvent.seq <= since)).all()
    assert min(ids) > max(earlier)
    # the first character of a ULID is at most 7 (48-bit time)
    assert all(i[4] <= "7" for i in ids)


def _batch_ids(session: Session, member: Callable[..., str], clock: FrozenClock) -> list[str]:
    settings(session, expiry_policy="rolling", expiry_months=1, pending_days=14)
    members = [member() for _ in range(10)]
    for m in members:
        order(session, m, 10000, placed_at=clock.now() - 20 * DAY)
        order(session, m, 3000)
    clock.advance(60 * DAY)
    since = last_seq(session)
    while service.settle_due_batch(session, batch_size=50):
        pass
    return list(
        session.scalars(
            select(OutboxEvent.id).where(OutboxEvent.seq > since).order_by(OutboxEvent.seq)
        )
    )


def test_control_python_path_ids_increase_with_seq(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    """`new_id` (python-ulid) is monotonic: the Python path's ids sort as their rows' seq."""
    from loyalty.bus import extra_subscribers
    from loyalty.ledger.events import OrderActivated

    with extra_subscribers([(OrderActivated, lambda _s, _e: None)]):
        ids = _batch_ids(session, member, clock)
    assert len(ids) == 20 and ids == sorted(ids)


def test_statement_ids_increase_with_seq_as_the_python_paths(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    """The statement's ids share one time prefix and have random hex tails: within the
    batch they do not sort as their rows' seq (the Python path's do: `new_id` is
    monotonic), and their tails use only 0-9A-F of the 32 digits."""
    ids = _batch_ids(session, member, clock)
    assert len(ids) == 20
    assert ids == sorted(ids)


def _created_after_occurred(
    session: Session, member: Callable[..., str], clock: FrozenClock, python_path: bool
) -> set[dt.timedelta]:
    from loyalty.bus import extra_subscribers
    from loyalty.ledger.events import OrderActivated

    settings(session, expiry_policy="rolling", expiry_months=1, pending_days=14)
    members = [member() for _ in range(3)]
    for m in members:
        order(session, m, 10000, placed_at=clock.now() - 20 * DAY)
        order(session, m, 3000)
    clock.advance(60 * DAY)
    since = last_seq(session)
    frozen_now = clock.now

    def ticking() -> dt.datetime:  # a clock that moves, as the system's does
        clock.advance(dt.timedelta(milliseconds=1))
        return frozen_now()

    clock.now = ticking  # type: ignore[method-assign]
    try:
        if python_path:
            with extra_subscribers([(OrderActivated, lambda _s, _e: None)]):
                service.settle_due_batch(session, batch_size=50)
        else:
            service.settle_due_batch(session, batch_size=50)
    finally:
        clock.now = frozen_now  # type: ignore[method-assign]
    rows = session.execute(
        select(OutboxEvent.created_at, OutboxEvent.occurred_at).where(OutboxEvent.seq > since)
    ).all()
    assert len(rows) == 6
    return {r.created_at > r.occurred_at for r in rows}  # type: ignore[misc]


def test_control_python_path_rows_are_created_when_inserted(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    assert _created_after_occurred(session, member, clock, python_path=True) == {True}


def test_statement_rows_are_created_when_inserted_as_the_python_paths(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    """Minor: the statement's rows are created at the batch's ``now`` (= occurred_at); the
    Python path's at their insertion (`outbox._insert`: clock.now() then)."""
    assert _created_after_occurred(session, member, clock, python_path=False) == {True}
