"""Review 6: orders, refunds and replays of one member racing on real PostgreSQL
connections; the wallet's spend and order count must equal the orders' sums."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from loyalty.db import get_database
from loyalty.ledger import service
from loyalty.ledger.errors import RefundExceedsOrderError
from loyalty.ledger.invariants import verify
from loyalty.members import service as members_service
from tests.support import race
from tests.wallet_spend.helpers import agrees

pytestmark = pytest.mark.concurrency
CURRENCIES = ("USD", "JPY", "BHD", "CLF")


def _accrue(session: Session, member_id: str, order_id: str, total: int, currency: str) -> bool:
    return service.accrue_order(
        session,
        client_id="cli_test",
        order_id=order_id,
        member_id=member_id,
        total=total,
        currency=currency,
    ).created


@pytest.fixture
def seeded(new_session: Callable[[], Session]) -> str:
    session = new_session()
    member, _ = members_service.enroll_member(session, external_id="r6-race")
    for n in range(8):
        _accrue(session, member.id, f"seed-{n}", 10000 + n, CURRENCIES[n % 4])
    return member.id


def test_c01_orders_refunds_and_replays_racing(app: Flask, seeded: str) -> None:
    workers = 16

    def work(index: int, session: Session) -> object:
        kind = index % 4
        if kind == 0:  # a new order
            return _accrue(session, seeded, f"new-{index}", 999 + index, CURRENCIES[index % 4])
        if kind == 1:  # a replay of a seed order
            return _accrue(
                session, seeded, f"seed-{index % 8}", 10000 + index % 8, CURRENCIES[index % 8 % 4]
            )
        if kind == 2:  # a partial refund of a seed order
            return service.refund_order(
                session, order_id=f"seed-{index % 8}", refund_id=f"part-{index}", amount=7
            ).created
        # the rest of a seed order, wholly refunded
        return service.refund_order(
            session,
            order_id=f"seed-{(index + 1) % 8}",
            refund_id=f"rest-{index}",
            amount=10000 + (index + 1) % 8 - 7,
        ).created

    results = race(app, workers, work)
    errors = [r for r in results if isinstance(r, Exception)]
    with app.app_context():
        session = get_database(app).sessionmaker()
        spend, count = agrees(session, seeded)
        assert verify(session) == []
        session.close()
    assert not [e for e in errors if not isinstance(e, RefundExceedsOrderError)], results
    assert count >= 8 - 4 + 4


def test_c02_one_order_refunded_in_parts_concurrently(app: Flask, seeded: str) -> None:
    """Eight refunds of 1/8th each race: the order is wholly refunded once, counted out once;
    plus the same refund id reported twice."""

    def work(index: int, session: Session) -> object:
        refund_id = f"eighth-{index % 8}"
        return service.refund_order(
            session, order_id="seed-0", refund_id=refund_id, amount=1250
        ).created

    results = race(app, 12, work)
    assert sum(1 for r in results if r is True) == 8, results
    with app.app_context():
        session = get_database(app).sessionmaker()
        spend, count = agrees(session, seeded)
        assert count == 7
        assert verify(session) == []
        session.close()


def test_c03_the_same_new_order_reported_concurrently(app: Flask, seeded: str) -> None:
    results = race(app, 10, lambda i, s: _accrue(s, seeded, "dup", 4321, "JPY"))
    assert sum(1 for r in results if r is True) == 1, results
    with app.app_context():
        session = get_database(app).sessionmaker()
        spend, count = agrees(session, seeded)
        assert count == 9
        assert verify(session) == []
        session.close()


def test_c04_first_orders_of_a_member_without_a_wallet(
    app: Flask, new_session: Callable[[], Session]
) -> None:
    from tests.ledger.conftest import without_a_wallet

    session = new_session()
    member, _ = members_service.enroll_member(session, external_id="r6-nowallet")
    without_a_wallet(session, member.id)
    results = race(app, 8, lambda i, s: _accrue(s, member.id, f"first-{i % 4}", 100, "USD"))
    assert sum(1 for r in results if r is True) == 4, results
    with app.app_context():
        session = get_database(app).sessionmaker()
        assert agrees(session, member.id) == (Decimal("4.00"), 4)
        assert verify(session) == []
        session.close()
