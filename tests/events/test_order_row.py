"""The order's outbox row written by the accrual's own statement (PostgreSQL) or
by the first subscriber (the ORM's path): once per order, the same row either way."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty import bus
from loyalty.clock import FrozenClock
from loyalty.db import request_transaction
from loyalty.events.models import OutboxEvent
from loyalty.ledger import service as ledger
from loyalty.ledger.service import orders as ledger_orders
from loyalty.members import service as members
from loyalty.tiers import service as tiers
from tests.ledger.conftest import settings
from tests.ledger.test_service import refund
from tests.ledger.test_statements import counting
from tests.support import race


def _accrued(session: Session, order_id: str) -> list[OutboxEvent]:
    session.expire_all()
    rows = session.scalars(
        select(OutboxEvent).where(OutboxEvent.type == "points.accrued").order_by(OutboxEvent.seq)
    )
    return [row for row in rows if row.data.get("order_id") == order_id]


def _fields(row: OutboxEvent) -> dict[str, Any]:
    data = {key: value for key, value in row.data.items() if key != "order_id"}
    return {
        "type": row.type,
        "version": row.version,
        "occurred_at": row.occurred_at,
        "created_at": row.created_at,
        "data": data,
    }


@pytest.mark.parametrize("total", [2500, 0], ids=["earned", "nothing earned"])
def test_both_paths_write_the_same_order_row(
    session: Session, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch, total: int
) -> None:
    rows = {}
    for one_statement in (True, False):
        monkeypatch.setattr(ledger_orders, "_writes_at_once", lambda session, o=one_statement: o)
        member, _ = members.enroll_member(session, external_id=f"same-{one_statement}")
        order_id = f"o-same-{one_statement}"
        ledger.accrue_order(
            session, member_id=member.id, order_id=order_id, total=total, currency="USD"
        )
        [row] = _accrued(session, order_id)
        assert row.member_id == member.id
        rows[one_statement] = _fields(row)
    assert rows[True] == rows[False]


@pytest.mark.parametrize("one_statement", [True, False], ids=["one statement", "orm"])
def test_a_replayed_order_writes_no_second_row(
    session: Session, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch, one_statement: bool
) -> None:
    monkeypatch.setattr(ledger_orders, "_writes_at_once", lambda session: one_statement)
    member, _ = members.enroll_member(session, external_id="replayed")
    for _ in range(3):
        ledger.accrue_order(
            session, member_id=member.id, order_id="o-r", total=2500, currency="USD"
        )
    assert len(_accrued(session, "o-r")) == 1


@pytest.mark.parametrize("one_statement", [True, False], ids=["one statement", "orm"])
def test_orders_of_one_request_transaction_and_of_a_batch_each_write_one_row(
    session: Session, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch, one_statement: bool
) -> None:
    monkeypatch.setattr(ledger_orders, "_writes_at_once", lambda session: one_statement)
    tiers.create_tier(session, code="bronze", name="Bronze", rank=1, threshold=0, actor="t")
    tiers.create_tier(session, code="silver", name="Silver", rank=2, threshold=20, actor="t")
    member, _ = members.enroll_member(session, external_id="batched")
    with request_transaction(session), bus.batch(session):
        for index in range(3):
            ledger.accrue_order(
                session, member_id=member.id, order_id=f"o-b{index}", total=2500, currency="USD"
            )
    for index in range(3):
        assert len(_accrued(session, f"o-b{index}")) == 1
    types = [
        row.type
        for row in session.scalars(
            select(OutboxEvent).where(OutboxEvent.member_id == member.id).order_by(OutboxEvent.seq)
        )
    ]
    assert types.count("tier.upgraded") == 1
    assert types.index("points.accrued") < types.index("tier.upgraded"), types


def test_an_idempotent_order_request_replayed_writes_one_row(
    client: FlaskClient, headers: dict[str, str], clock: FrozenClock, session: Session
) -> None:
    created = client.post("/v1/members", json={"external_id": "idem"}, headers=headers)
    member_id = created.json["id"]
    body = {"order_id": "o-i", "member_id": member_id, "total": 2500, "currency": "USD"}
    for _ in range(2):
        response = client.post(
            "/v1/orders", json=body, headers={**headers, "Idempotency-Key": "idem-1"}
        )
        assert response.status_code == 201, response.json
    assert client.post("/v1/orders", json=body, headers=headers).status_code == 200
    assert len(_accrued(session, "o-i")) == 1


@pytest.mark.concurrency
def test_one_order_reported_concurrently_writes_one_row(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    session = new_session()
    member, _ = members.enroll_member(session, external_id="raced")
    session.commit()

    def place(index: int, s: Session) -> bool:
        return ledger.accrue_order(
            s, member_id=member.id, order_id="o-raced", total=2500, currency="USD"
        ).created

    outcomes = race(app, 4, place)
    assert sorted(outcomes, key=str) == [False, False, False, True], outcomes  # type: ignore[arg-type]
    assert len(_accrued(session, "o-raced")) == 1


def test_an_order_repaying_debt_writes_one_row_with_the_balance_after_it(
    session: Session, clock: FrozenClock
) -> None:
    """A wallet in debt (a refund of held and spent points, allow_negative): the order goes
    the ORM's way on PostgreSQL; its row is written once, first, with the balance the wallet
    has after the order (as the order's response says)."""
    settings(session, refund_policy="allow_negative")
    tiers.create_tier(session, code="bronze", name="Bronze", rank=1, threshold=0, actor="t")
    tiers.create_tier(session, code="silver", name="Silver", rank=2, threshold=300, actor="t")
    member, _ = members.enroll_member(session, external_id="indebted")
    past = clock.now() - dt.timedelta(days=20)
    for name in ("A", "B"):
        ledger.accrue_order(
            session, member_id=member.id, order_id=name, total=10000, currency="USD", placed_at=past
        )
    ledger.place_hold(session, member_id=member.id, points=150)
    ledger.redeem(session, member_id=member.id, points=40)
    refund(session, "A", "R1", amount=10000)
    assert ledger.get_balance(session, member.id).available < 0
    before = len(list(session.scalars(select(OutboxEvent.id))))
    result = ledger.accrue_order(
        session, member_id=member.id, order_id="C", total=20000, currency="USD", placed_at=past
    )
    [row] = _accrued(session, "C")
    after = ledger.get_balance(session, member.id)
    assert row.data["balance"] == result.body["balance"]
    assert row.data["balance"] == {
        "available": after.available,
        "pending": after.pending,
        "held": after.held,
    }
    written = list(session.scalars(select(OutboxEvent).order_by(OutboxEvent.seq)))[before:]
    assert [event.type for event in written][:2] == ["points.accrued", "tier.upgraded"], [
        event.type for event in written
    ]


@pytest.mark.concurrency
def test_an_order_retried_after_a_deadlock_past_its_statement_writes_one_row(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    """The order's statement (its outbox row riding) has run; the tier upgrade it causes
    waits for the tier's row, held by a transaction that then waits for the member's
    wallet: a deadlock. The order (which waited first) is rolled back and run again by
    `retrying`: one order, one outbox row."""
    from sqlalchemy import text

    from tests.support import in_thread, wait_for, waiting_for_lock

    session = new_session()
    tiers.create_tier(session, code="bronze", name="Bronze", rank=1, threshold=0, actor="t")
    tiers.create_tier(session, code="silver", name="Silver", rank=2, threshold=20, actor="t")
    member, _ = members.enroll_member(session, external_id="deadlocked")
    # The member's wallet exists (committed): the blocker's lock of it waits.
    ledger.accrue_order(session, member_id=member.id, order_id="o-w", total=100, currency="USD")
    session.commit()
    blocker = new_session()
    # The order's deadlock check (1 s) comes first: the order is the one rolled back.
    blocker.execute(text("SET deadlock_timeout = '20s'"))
    blocker.execute(text("SELECT code FROM tiers WHERE code = 'silver' FOR UPDATE"))
    seen_context = counting(blocker.get_bind())
    seen = seen_context.__enter__()
    thread, outcome = in_thread(
        app,
        lambda: (
            ledger.accrue_order(
                new_session(), member_id=member.id, order_id="o-dl", total=2500, currency="USD"
            ).created
        ),
    )
    watcher = new_session()
    try:
        wait_for(lambda: waiting_for_lock(watcher, "%FROM tiers%"), "the order to wait")
    finally:
        watcher.close()
    try:
        blocker.execute(
            text("SELECT id FROM wallets WHERE member_id = :m FOR UPDATE"), {"m": member.id}
        )
    except Exception:  # noqa: BLE001 - the blocker may be the one rolled back instead
        pass
    blocker.rollback()
    blocker.close()
    thread.join()
    seen_context.__exit__(None, None, None)
    assert outcome == [True], outcome
    # The order's statement ran twice: the deadlock rolled the first back.
    assert len([s for s in seen if "rider_outbox" in s]) == 2, seen
    assert len(_accrued(session, "o-dl")) == 1
    types = [
        row.type
        for row in session.scalars(
            select(OutboxEvent).where(OutboxEvent.member_id == member.id).order_by(OutboxEvent.seq)
        )
    ]
    assert types == ["member.enrolled", "points.accrued", "points.accrued", "tier.upgraded"]
