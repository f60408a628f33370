"""Review 8: the job's settlement in one statement on real connections, two runners and
requests at once."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.db import get_database
from loyalty.ledger import service
from loyalty.ledger.errors import InsufficientPointsError
from loyalty.ledger.models import Entry, Lot, Wallet
from loyalty.members import service as members_service
from tests.ledger.conftest import CLIENT
from tests.support import race

pytestmark = pytest.mark.concurrency
DAY = dt.timedelta(days=1)
MEMBERS = 24


@pytest.fixture
def due_members(new_session: Callable[[], Session], clock: FrozenClock) -> list[str]:
    session = new_session()
    service.update_settings(
        session,
        changes={"expiry_policy": "rolling", "expiry_months": 1, "pending_days": 14},
        actor="test",
    )
    ids = []
    for n in range(MEMBERS):
        member, _ = members_service.enroll_member(session, external_id=f"r8-{n}")
        ids.append(member.id)
        for k in range(3):
            service.accrue_order(
                session,
                client_id=CLIENT,
                order_id=f"r8-{n}-old-{k}",
                member_id=member.id,
                total=10000,
                currency="USD",
                placed_at=clock.now() - 20 * DAY,
            )
            service.accrue_order(
                session,
                client_id=CLIENT,
                order_id=f"r8-{n}-new-{k}",
                member_id=member.id,
                total=3000 + k,
                currency="USD",
            )
    clock.advance(50 * DAY)
    session.close()
    return ids


def test_two_runners_and_requests_at_once_each_lot_once(
    app: Flask, due_members: list[str], clock: FrozenClock
) -> None:
    def work(index: int, session: Session) -> object:
        if index < 2:
            settled = 0
            while n := service.settle_due_batch(session, batch_size=4):
                settled += n
            return settled
        done = 0
        for k, member_id in enumerate(due_members[index % 2 :: 2]):
            try:
                if k % 3 == 0:
                    service.redeem(session, member_id=member_id, points=5)
                elif k % 3 == 1:
                    service.place_hold(session, member_id=member_id, points=3)
                else:
                    service.accrue_order(
                        session,
                        client_id=CLIENT,
                        order_id=f"req-{index}-{k}",
                        member_id=member_id,
                        total=1500,
                        currency="USD",
                    )
                done += 1
            except InsufficientPointsError:
                pass
        return done

    results = race(app, 4, work)
    assert not [r for r in results if isinstance(r, Exception)], results
    with app.app_context():
        session = get_database(app).sessionmaker()
        try:
            now = clock.now()
            # a runner stops when every due wallet left is a request's (SKIP LOCKED): what
            # is left is due (next_due_at) and a last pass takes it
            left = session.scalars(select(Wallet.id).where(Wallet.next_due_at <= now)).all()
            while service.settle_due_batch(session, batch_size=50):
                pass
            print("left for the last pass:", len(left))
            activations = Counter(
                session.scalars(select(Entry.reference_id).where(Entry.kind == "activation")).all()
            )
            assert all(count == 1 for count in activations.values()), activations
            expiries = Counter(
                session.scalars(select(Entry.reference_id).where(Entry.kind == "expiry")).all()
            )
            assert all(count == 1 for count in expiries.values()), expiries
            # nothing due left undone
            assert not session.scalars(
                select(Lot.id).where(Lot.activated_at.is_(None), Lot.activates_at <= now)
            ).all()
            assert not session.scalars(
                select(Lot.id).where(
                    Lot.activated_at.is_not(None),
                    Lot.expired_at.is_(None),
                    Lot.remaining > 0,
                    Lot.expires_at <= now,
                )
            ).all()
            assert not session.scalars(select(Wallet.id).where(Wallet.next_due_at <= now)).all()
            for member_id in due_members:
                report = service.get_balance(session, member_id)
                last = session.scalars(
                    select(Entry).where(Entry.member_id == member_id).order_by(Entry.id.desc())
                ).first()
                assert last is not None
                assert (last.balance_available, last.balance_pending, last.balance_held) == (
                    report.available,
                    report.pending,
                    report.held,
                )
        finally:
            session.close()


def test_a_batch_settled_in_one_statement_wakes_the_workers(
    app: Flask, due_members: list[str], new_session: Callable[[], Session]
) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    from loyalty.events import outbox

    url = make_url(app.config["DATABASE_URL"]).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as listener:
        listener.execute(f"LISTEN {outbox.CHANNEL}")
        session = new_session()
        assert service.settle_due_batch(session, batch_size=5) == 5
        notes = list(listener.notifies(timeout=0.5, stop_after=1))
        assert [note.channel for note in notes] == [outbox.CHANNEL]
