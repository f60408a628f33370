"""The paths an order or refund takes, probed (a review of 2a98305: each wallet keeps its
member's spend and order count).

Each probe checks the wallet's spend and order count against the orders (helpers.agrees)
and, through the conftest, the ledger's invariants (8 included) after the test."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy.exc
from flask import Flask
from sqlalchemy import event
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.ledger import service
from loyalty.ledger.errors import RefundExceedsOrderError
from loyalty.ledger.invariants import verify
from loyalty.members import service as members_service
from tests.ledger.conftest import order, settings
from tests.wallet_spend.helpers import agrees, kept

DAY = dt.timedelta(days=1)
_n = iter(range(1, 10**9))


def _member(session: Session) -> str:
    return members_service.enroll_member(session, external_id=f"r6-{next(_n)}")[0].id


# --- The ORM path and the amounts --------------------------------------------------------


def test_p01_accrual_on_a_wallet_in_debt_orm_path(db: Session) -> None:
    """allow_negative: a refund of spent points leaves debt; the next orders take the ORM path
    (PostgreSQL too) and repay it."""
    settings(db, refund_policy="allow_negative", pending_days=0)
    m = _member(db)
    order(db, m, 10000, order_id="p01-a")
    service.redeem(db, member_id=m, points=80)
    service.refund_order(db, order_id="p01-a", refund_id="p01-r", amount=10000)
    assert kept(db, m) == (0, 0)
    assert service.get_balance(db, m).available == -80
    order(db, m, 5000, order_id="p01-b")  # repays 50
    order(db, m, 12345, order_id="p01-c", currency="BHD")  # repays the rest
    order(db, m, 0, order_id="p01-d")
    assert agrees(db, m) == (Decimal("50.00") + Decimal("12.345"), 2)
    assert verify(db) == []


def test_p02_orders_of_total_zero_and_their_refunds(db: Session) -> None:
    m = _member(db)
    items = [{"sku": "free", "quantity": 2, "unit_price": 0}]
    order(db, m, 0, order_id="p02-a", items=items)
    order(db, m, 0, order_id="p02-b")
    assert agrees(db, m) == (0, 0)
    service.refund_order(
        db, order_id="p02-a", refund_id="p02-r", items=[{"sku": "free", "quantity": 1}]
    )
    service.refund_order(
        db, order_id="p02-a", refund_id="p02-r2", items=[{"sku": "free", "quantity": 1}]
    )
    assert agrees(db, m) == (0, 0)
    with pytest.raises(RefundExceedsOrderError):
        service.refund_order(db, order_id="p02-b", refund_id="p02-r3", amount=0)
    assert agrees(db, m) == (0, 0)


def test_p03_currencies_of_0_2_3_4_decimals_and_large_totals(db: Session) -> None:
    m = _member(db)
    big = 10**12 - 1  # JPY: what an order may earn at most
    for order_id, total, currency in (
        ("p03-jpy", big, "JPY"),
        ("p03-jpy2", big, "JPY"),
        ("p03-bhd", 999_999_999_999, "BHD"),
        ("p03-clf", 9_999_999_999_999, "CLF"),
        ("p03-usd", 1, "usd"),  # lower case: the order keeps "USD"
        ("p03-kwd", 1, "KWD"),
        ("p03-uyw", 1, "UYW"),
    ):
        order(db, m, total, order_id=order_id, currency=currency)
    spend, count = agrees(db, m)
    assert count == 7
    assert spend == 2 * big + Decimal("999999999.999") + Decimal("999999999.9999") + Decimal(
        "0.01"
    ) + Decimal("0.001") + Decimal("0.0001")
    service.refund_order(db, order_id="p03-clf", refund_id="p03-r1", amount=1)
    service.refund_order(db, order_id="p03-uyw", refund_id="p03-r2", amount=1)
    assert agrees(db, m)[1] == 6


def test_p04_refunds_by_items_reaching_the_total_in_several_steps(db: Session) -> None:
    m = _member(db)
    items = [
        {"sku": "a", "quantity": 3, "unit_price": 3333},
        {"sku": "b", "quantity": 1, "unit_price": 1},
    ]
    order(db, m, 9999, order_id="p04-a", items=items)  # the discount spread over the items
    order(db, m, 700, order_id="p04-b")
    assert agrees(db, m)[1] == 2
    for n, sku in enumerate(("a", "b", "a")):
        service.refund_order(
            db, order_id="p04-a", refund_id=f"p04-r{n}", items=[{"sku": sku, "quantity": 1}]
        )
        assert agrees(db, m)[1] == 2
    service.refund_order(
        db, order_id="p04-a", refund_id="p04-r9", items=[{"sku": "a", "quantity": 1}]
    )
    assert agrees(db, m) == (Decimal("7.00"), 1)
    # An amount in three steps reaching the total, then one more refused.
    for n, amount in enumerate((1, 298, 401)):
        service.refund_order(db, order_id="p04-b", refund_id=f"p04-s{n}", amount=amount)
    assert agrees(db, m) == (0, 0)
    with pytest.raises(RefundExceedsOrderError):
        service.refund_order(db, order_id="p04-b", refund_id="p04-s9", amount=1)
    # Replays change nothing.
    service.refund_order(db, order_id="p04-b", refund_id="p04-s2", amount=401)
    assert agrees(db, m) == (0, 0)


def test_p05_replayed_orders_and_refunds_are_counted_once(db: Session) -> None:
    m = _member(db)
    for _ in range(3):
        order(db, m, 1234, order_id="p05-a", client_id="cli_test")
        order(db, m, 1234, order_id="p05-a", client_id="cli_other")  # same channel
    service.refund_order(db, order_id="p05-a", refund_id="p05-r", amount=1234)
    service.refund_order(db, order_id="p05-a", refund_id="p05-r", amount=1234)
    assert agrees(db, m) == (0, 0)
    order(db, m, 1234, order_id="p05-a")  # still a replay of the refunded order
    assert agrees(db, m) == (0, 0)


# --- The statement sharing: now, updated_at, last_activity_at -----------------------------


@pytest.mark.parametrize("policy", ["rolling", "calendar", "none", "inactivity"])
def test_p06_accrual_statement_sharing_never_differs(
    session: Session, clock: FrozenClock, policy: str
) -> None:
    """Back-dated orders (pending and active), the inactivity policy, a wallet with lots due
    (the settle step writes the wallet first), a lapsed wallet."""
    settings(session, expiry_policy=policy, pending_days=14)
    m = _member(session)
    order(session, m, 1000, order_id="p06-a")  # pending
    order(session, m, 1000, order_id="p06-b", placed_at=clock.now() - 20 * DAY)  # active
    clock.advance(15 * DAY)  # p06-a due: settled by the next accrual
    order(session, m, 1000, order_id="p06-c", placed_at=clock.now() - 3 * DAY)
    order(session, m, 0, order_id="p06-d")  # earns nothing: the statement without entry
    clock.advance(3 * 365 * DAY + 40 * DAY)  # everything expired/lapsed, due
    order(session, m, 1000, order_id="p06-e", placed_at=clock.now() - 1 * DAY)
    assert agrees(session, m) == (Decimal("40.00"), 4)


def test_p06b_the_sharing_in_the_same_transaction_after_other_work(
    session: Session, clock: FrozenClock
) -> None:
    """A check-in/adjustment then an order in one unit of work: the wallet locked already,
    its updated_at written at another moment than the order's now."""
    from loyalty.db import unit_of_work

    m = _member(session)
    with unit_of_work(session):
        service.adjust(session, member_id=m, points=5, reason="r6")
        clock.advance(dt.timedelta(seconds=1))
        service.accrue_order(
            session, order_id="p06b", member_id=m, total=500, currency="USD", client_id="c"
        )
        clock.advance(dt.timedelta(seconds=1))
        service.accrue_order(
            session, order_id="p06b2", member_id=m, total=500, currency="USD", client_id="c"
        )
    assert agrees(session, m) == (Decimal("10.00"), 2)


# --- Retries -------------------------------------------------------------------------------


def _fail_once_after(engine: Any, marker: str, sqlstate: str = "40001") -> list[int]:
    # (the listener stays; it fires once)
    """Make the first statement containing ``marker`` fail with ``sqlstate`` once it ran."""
    import psycopg

    fired: list[int] = []

    def after(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if marker in statement and not fired:
            fired.append(1)
            orig = psycopg.errors.lookup(sqlstate)("injected by the test")
            raise sqlalchemy.exc.OperationalError(statement, parameters, orig)

    event.listen(engine, "after_cursor_execute", after)
    return fired


@pytest.mark.parametrize(
    "marker, sqlstate",
    [
        ("wallet_update", "40001"),  # the accrual's own statement ran, then failed
        ("badge_progress", "40P01"),  # a later statement of the accrual's transaction
        ("outbox_events", "40001"),
    ],
)
def test_p07_a_retried_accrual_is_counted_once(
    app: Flask, session: Session, marker: str, sqlstate: str
) -> None:
    from tests.community.conftest import make_badge

    make_badge(
        session,
        name="Spender",
        rule="spend",
        event_type=None,
        levels=[{"name": "1", "threshold": 1, "bonus_points": 0}],
    )
    m = _member(session)
    order(session, m, 700, order_id="p07-0")
    engine = session.get_bind().engine
    fired = _fail_once_after(engine, marker, sqlstate)
    order(session, m, 1500, order_id="p07-a")
    order(session, m, 1500, order_id="p07-b", currency="BHD")
    assert agrees(session, m) == (Decimal("7.00") + Decimal("15.00") + Decimal("1.500"), 3)
    assert fired, "the failure was never injected"


def test_p08_a_retried_refund_is_counted_once(session: Session) -> None:
    m = _member(session)
    order(session, m, 1000, order_id="p08-a")
    engine = session.get_bind().engine
    fired = _fail_once_after(engine, "UPDATE orders", "40P01")
    service.refund_order(session, order_id="p08-a", refund_id="p08-r", amount=1000)
    assert fired
    assert agrees(session, m) == (0, 0)
    service.refund_order(session, order_id="p08-a", refund_id="p08-r", amount=1000)
    assert agrees(session, m) == (0, 0)


def test_p09_first_order_creates_the_wallet_and_a_referred_members_refund(
    db: Session,
) -> None:
    from tests.ledger.conftest import without_a_wallet

    referrer, _ = members_service.enroll_member(db, external_id=f"r6-ref-{next(_n)}")
    order(db, referrer.id, 2500, order_id="p09-ref")
    referred, _ = members_service.enroll_member(
        db, external_id=f"r6-refd-{next(_n)}", referral_code=referrer.referral_code
    )
    without_a_wallet(db, referred.id)
    order(db, referred.id, 3000, order_id="p09-a", currency="JPY")
    order(db, referred.id, 4000, order_id="p09-b")
    service.refund_order(db, order_id="p09-a", refund_id="p09-r", amount=3000)
    service.refund_order(db, order_id="p09-b", refund_id="p09-r2", amount=1)
    assert agrees(db, referred.id) == (Decimal("39.99"), 1)
    assert agrees(db, referrer.id) == (Decimal("25.00"), 1)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_p10_random_sequences_of_orders_refunds_and_replays(
    e2e_app: Flask, db: Session, seed: int
) -> None:
    """Random orders (0/2/3/4-decimal currencies, totals 0 to large, with items or not,
    back-dated or not), refunds by amount and by items, replays, redemptions and the
    allow_negative policy: the wallet agrees with the orders after every step."""
    import random

    from loyalty.clock import FrozenClock as _Frozen
    from loyalty.clock import use_clock
    from loyalty.errors import LoyaltyError
    from tests.support import START

    clock = _Frozen(START)
    use_clock(e2e_app, clock)
    rng = random.Random(seed)
    calls: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    settings(db, refund_policy=rng.choice(["allow_negative", "within_balance"]), pending_days=3)
    members = [_member(db) for _ in range(2)]
    placed: list[tuple[str, str, list[str]]] = []
    for step in range(60):
        m = rng.choice(members)
        action = rng.random()
        try:
            if action < 0.45 or not placed:
                order_id = f"p10-{seed}-{step}"
                currency = rng.choice(["USD", "JPY", "BHD", "CLF", "EUR"])
                total = rng.choice([0, 1, 99, 12345, 10**9 + 7])
                items = None
                skus: list[str] = []
                if rng.random() < 0.5 and total:
                    skus = ["x", "y"]
                    items = [
                        {"sku": "x", "quantity": 3, "unit_price": total},
                        {"sku": "y", "quantity": 1, "unit_price": 1},
                    ]
                back = rng.choice([0, 0, 2, 10])
                calls[order_id] = dict(
                    total=total,
                    order_id=order_id,
                    currency=currency,
                    items=items,
                    placed_at=clock.now() - back * DAY if back else None,
                )
                order(db, m, **calls[order_id])
                placed.append((order_id, m, skus))
            elif action < 0.55:
                order_id, owner, _ = rng.choice(placed)
                assert order(db, owner, **calls[order_id]) is not None
            elif action < 0.85:
                order_id, owner, skus = rng.choice(placed)
                if skus and rng.random() < 0.5:
                    service.refund_order(
                        db,
                        order_id=order_id,
                        refund_id=f"p10-r-{seed}-{step}",
                        items=[{"sku": rng.choice(skus), "quantity": 1}],
                    )
                else:
                    service.refund_order(
                        db,
                        order_id=order_id,
                        refund_id=f"p10-r-{seed}-{step}",
                        amount=rng.choice([1, 50, 10**9 + 7, 10**10]),
                    )
            elif action < 0.95:
                service.redeem(db, member_id=m, points=rng.choice([1, 10, 100]))
            else:
                clock.advance(rng.choice([1, 4, 400]) * DAY)
        except LoyaltyError as error:
            db.rollback()
            errors.append(type(error).__name__)
        for each in members:
            agrees(db, each)
    use_clock(e2e_app, None)
    assert verify(db) == []
    assert "OrderConflictError" not in errors, errors
    print("p10", seed, sorted(set(errors)), len(errors), len(placed))
