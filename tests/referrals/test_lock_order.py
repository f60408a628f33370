"""Operations that touch several members' wallets take them in one global order (member id)
and never wait on another wallet while holding a batch: the chain Y -> Z -> X (Y referred Z,
Z referred X) cannot deadlock the job against a refund. On real PostgreSQL connections."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from flask import Flask
from sqlalchemy import Engine, event, select, text
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.db import unit_of_work
from loyalty.ledger import service as ledger
from loyalty.ledger.models import Entry, Wallet
from tests.referrals.conftest import (
    CLIENT,
    WINDOW,
    make_member,
    place_order,
    referral_of,
    terms,
)

pytestmark = pytest.mark.concurrency


@contextmanager
def wallet_locked(engine: Engine, member_id: str) -> Iterator[None]:
    """Hold the member's wallet lock on a connection of its own until the block ends."""
    with engine.connect() as conn:
        trans = conn.begin()
        conn.execute(
            text("SELECT id FROM wallets WHERE member_id = :m FOR UPDATE"), {"m": member_id}
        )
        try:
            yield
        finally:
            trans.rollback()


def is_locked(engine: Engine, member_id: str) -> bool:
    with engine.connect() as conn:
        conn.execute(text("SET lock_timeout = '50ms'"))
        try:
            conn.execute(
                text("SELECT id FROM wallets WHERE member_id = :m FOR UPDATE NOWAIT"),
                {"m": member_id},
            )
        except Exception:  # noqa: BLE001 - lock_not_available
            return True
        finally:
            conn.rollback()
        return False


def activations(session: Session, member_id: str) -> int:
    session.rollback()
    return len(
        session.scalars(
            select(Entry.id).where(Entry.member_id == member_id, Entry.kind == "activation")
        ).all()
    )


def test_the_job_never_waits_on_a_referrers_wallet_while_holding_its_batch(
    app: Flask, engine: Engine, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    session = new_session()
    terms(session, referrer_points=500, referee_points=200)
    zed = make_member(session)
    xia = make_member(session, referrer=zed)
    others = [make_member(session) for _ in range(3)]
    place_order(session, xia.id, 6000)
    for other in others:
        place_order(session, other.id, 3000)
    ledger.adjust(session, member_id=zed.id, points=1, reason="a wallet")
    clock.advance(WINDOW)

    done = threading.Event()

    def job() -> None:
        with app.app_context():
            job_session = new_session()
            while ledger.settle_due_batch(job_session, batch_size=50):
                pass
        done.set()

    with wallet_locked(engine, zed.id):
        worker = threading.Thread(target=job)
        worker.start()
        # The batch commits its activations without waiting on Zed, the referrer, whose
        # reward is a follow-up of its own.
        deadline = time.monotonic() + 10
        while activations(new_session(), xia.id) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert activations(new_session(), xia.id) == 1
        assert all(activations(new_session(), o.id) == 1 for o in others)
    worker.join(timeout=30)
    assert done.is_set()
    check = new_session()
    assert referral_of(check, xia.id).status == "qualified"
    assert ledger.get_balance(check, zed.id).available == 501


def test_a_refund_takes_the_member_and_the_referrer_in_member_id_order(
    app: Flask, engine: Engine, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    session = new_session()
    terms(session, referrer_points=500, referee_points=200)
    yan = make_member(session)
    zed = make_member(session, referrer=yan)
    order_id = place_order(session, zed.id, 6000)
    clock.advance(WINDOW)
    ledger.settle_wallet(session, wallet_id=ledger.points_summaries(session, [zed.id])[zed.id].id)
    assert referral_of(session, zed.id).status == "qualified"
    first, second = sorted([yan.id, zed.id])

    outcome: list[object] = []

    def refund() -> None:
        with app.app_context():
            try:
                outcome.append(
                    ledger.refund_order(
                        new_session(),
                        client_id=CLIENT,
                        order_id=order_id,
                        refund_id="r-lock",
                        amount=6000,
                    ).created
                )
            except Exception as error:  # noqa: BLE001 - the test reports it
                outcome.append(error)

    with wallet_locked(engine, first):
        worker = threading.Thread(target=refund)
        worker.start()
        time.sleep(0.5)  # the refund is now waiting for the first wallet
        # ... and holds no other wallet while it waits: the second is free.
        assert not is_locked(engine, second)
    worker.join(timeout=30)
    assert outcome == [True]
    check = new_session()
    assert referral_of(check, zed.id).status == "clawed_back"


def test_wallets_are_locked_in_member_id_order(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    session = new_session()
    ids = [make_member(session).id for _ in range(4)][::-1]
    statements: list[str] = []
    engine = session.get_bind()

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "FOR UPDATE" in statement and "wallets" in statement:
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        with unit_of_work(session):
            locked = ledger.lock_members(session, ids)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert list(locked) == sorted(ids)
    assert statements and all("ORDER BY wallets.member_id" in s for s in statements)
    assert len(session.scalars(select(Wallet.id).where(Wallet.member_id.in_(ids))).all()) == 4
