"""Regressions found by a review of the refund reconciliation, expiry, the inactivity sweep
and the history import: one sequence each, with what happens (and what used to); the
ledger's invariants are checked after each, as in every ledger test."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loyalty.cli import main
from loyalty.clock import FrozenClock
from loyalty.db import unit_of_work
from loyalty.ledger import service
from loyalty.ledger.models import Order
from loyalty.members import service as members_service
from tests.ledger.conftest import balance, order, settings
from tests.ledger.test_reconciliation import give_back, refund, refunds_of, spend

DAY = dt.timedelta(days=1)
Member = Callable[..., str]


# --- points of the order that expired while a reward claim had them -------------------------


def test_a_refund_takes_nothing_for_points_that_expired_while_a_claim_had_them(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    """The order's points were spent on a reward claim; the lot passed its expiry date; the
    claim was then cancelled, so nothing came back (README: "points whose lot expired
    meanwhile expire instead of coming back"). The order's points are therefore gone, and a
    refund of the order takes nothing else for them, as when a hold had them
    (test_held_points_that_expired_are_not_reversed_again). It used to take the member's later
    goodwill points instead and reported a shortfall."""
    settings(session, expiry_policy="rolling", expiry_months=1)
    m = member()
    order(session, m, 10000, order_id="o-claim-exp", placed_at=clock.now() - 15 * DAY)
    claim = spend(session, m, 100)
    clock.advance(40 * DAY)  # the order's lot expires while the claim has its points
    assert give_back(session, claim) == 0
    service.adjust(session, member_id=m, points=50, reason="goodwill")

    result = refund(session, "o-claim-exp", "r-1", amount=10000)

    assert (result["points_reversed"], result["shortfall"]) == (100, 0)
    assert balance(session, m) == (50, 0, 0)
    (only,) = refunds_of(session, "o-claim-exp")
    assert (only.points_expired, only.outstanding) == (100, 0)


def test_a_refund_takes_nothing_for_points_lapsed_for_inactivity_while_a_claim_had_them(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    """The same under the inactivity policy: all points lapsed while a claim had the order's;
    cancelling the claim gives nothing back, so the refund has nothing left to take."""
    settings(session, expiry_policy="inactivity", expiry_months=1)
    m = member()
    order(session, m, 10000, order_id="o-claim-lapsed", placed_at=clock.now() - 15 * DAY)
    claim = spend(session, m, 100)
    clock.advance(40 * DAY)  # past the inactivity deadline
    assert balance(session, m) == (0, 0, 0)
    assert give_back(session, claim) == 0
    service.adjust(session, member_id=m, points=50, reason="goodwill")

    result = refund(session, "o-claim-lapsed", "r-1", amount=10000)

    assert (result["points_reversed"], result["shortfall"]) == (100, 0)
    assert balance(session, m) == (50, 0, 0)


# --- a refund's shortfall after the refund policy changed -----------------------------------


def test_order_points_that_come_back_go_to_the_refunds_shortfall_before_other_debt(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    """A refund under within_balance leaves a shortfall while a hold has the order's points;
    the manager then switches to allow_negative and a badge's 30 bonus points are clawed back
    into debt. When the hold is released the order's 70 points and the badge's 30 come back:
    the order's 70 belong to the refund's shortfall and the badge's 30 to the debt, so the
    member ends with nothing. (The debt used to be repaid from the order's own lot first, the
    shortfall then found only 40 of its 70, and the member kept 30 points that were both
    refunded and clawed back.)"""
    m = member()
    order(session, m, 10000, order_id="o-switch", placed_at=clock.now() - 15 * DAY)
    with unit_of_work(session):
        service.credit_bonus(session, member_id=m, points=30, reason="badge")
    hold = service.place_hold(session, member_id=m, points=100).hold  # the order's 100
    result = refund(session, "o-switch", "r-1", amount=10000)
    assert (result["points_reversed"], result["shortfall"]) == (100, 70)  # 30 from the badge
    settings(session, refund_policy="allow_negative")
    with unit_of_work(session):
        service.reverse_bonus(session, member_id=m, points=30, reason="badge revoked")
    assert balance(session, m) == (-30, 0, 100)

    service.release_hold(session, hold_id=hold.id)

    assert balance(session, m) == (0, 0, 0)
    (only,) = refunds_of(session, "o-switch")
    assert only.outstanding == 0


# --- the inactivity sweep --------------------------------------------------------------------


# --- the history import ---------------------------------------------------------------------


def test_the_import_reads_a_csv_saved_with_a_byte_order_mark(
    app: Flask, session: Session, clock: FrozenClock, tmp_path: Path
) -> None:
    """Spreadsheets (Excel's "CSV UTF-8") save a byte order mark first; it is not part of the
    first header (it used to be, and every row failed with "order_id: Missing data")."""
    members_service.enroll_member(session, external_id="ada")
    orders = tmp_path / "orders.csv"
    orders.write_bytes(
        "order_id,external_id,total,currency,placed_at\r\n"
        "H-1,ada,12000,USD,2024-05-01T10:00:00Z\r\n".encode("utf-8-sig")
    )

    result = app.test_cli_runner().invoke(main, ["import", "orders", str(orders)])

    assert result.exit_code == 0, result.output
    assert "Imported 1 orders; 0 were already recorded; 0 failed." in result.output
    assert session.scalar(select(func.count()).select_from(Order)) == 1


def test_an_import_file_that_is_not_utf8_is_refused_with_a_message(
    app: Flask, session: Session, clock: FrozenClock, tmp_path: Path
) -> None:
    """A Latin-1 export (a "café" note column) is refused with a message naming the file's
    problem (it used to stop on an unhandled UnicodeDecodeError)."""
    members_service.enroll_member(session, external_id="ada")
    orders = tmp_path / "orders.csv"
    orders.write_bytes(
        "order_id,external_id,total,currency,placed_at,note\n"
        "H-1,ada,12000,USD,2024-05-01T10:00:00Z,caf\xe9\n".encode("latin-1")
    )

    result = app.test_cli_runner().invoke(main, ["import", "orders", str(orders)])

    assert result.exit_code != 0
    assert not isinstance(result.exception, UnicodeDecodeError), result.exception
    assert "UTF-8" in result.output


@pytest.mark.concurrency
def test_a_settings_change_that_answers_busy_has_not_happened(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    """Switching inactivity on commits the change, then marks the wallets due in batches of
    their own. When one wallet is locked longer than the lock timeout (a long request on that
    member), the change still answers (the job finishes the marking); it used to answer 503
    `ledger-busy` ("retry") although the change had been made."""
    from sqlalchemy import text

    from loyalty.db import get_database
    from loyalty.errors import LedgerBusyError
    from loyalty.ledger.models import Wallet

    seed = new_session()
    created, _ = members_service.enroll_member(seed, external_id="busy")
    service.accrue_order(
        seed,
        client_id="cli_test",
        order_id="busy-1",
        member_id=created.id,
        total=10000,
        currency="USD",
        placed_at=clock.now() - 15 * DAY,
    )
    holder = new_session()
    holder.execute(select(Wallet).where(Wallet.member_id == created.id).with_for_update())
    connection = get_database(app).engine.connect()
    connection.execute(text("SET lock_timeout = '200ms'"))
    connection.commit()
    waiter = Session(bind=connection)
    outcome: Exception | None = None
    try:
        service.update_settings(
            waiter, changes={"expiry_policy": "inactivity", "expiry_months": 1}, actor="t"
        )
    except LedgerBusyError as error:
        outcome = error
    finally:
        holder.rollback()
        waiter.close()
        connection.invalidate()  # keep the 200 ms timeout out of the pool
        connection.close()

    policy = service.get_settings(new_session()).expiry_policy
    assert outcome is None or policy == "rolling", f"answered {outcome!r}, policy is {policy}"


def test_imported_history_is_capped_by_the_day_it_was_placed_not_the_day_of_the_import(
    app: Flask, session: Session, clock: FrozenClock, tmp_path: Path
) -> None:
    """With a daily cap of 100 order points, three orders placed on three days of 2024 each
    earn their 100 points, and the member's order today its own 100: caps count orders by the
    day they were placed (they used to count every order reported today)."""
    from loyalty.earning import service as earning_service

    earning_service.update_earning_settings(session, changes={"daily_cap": 100}, actor="t")
    ada, _ = members_service.enroll_member(session, external_id="ada")
    orders = tmp_path / "orders.csv"
    orders.write_text(
        "order_id,external_id,total,currency,placed_at\n"
        "H-1,ada,10000,USD,2024-05-01T10:00:00Z\n"
        "H-2,ada,10000,USD,2024-06-01T10:00:00Z\n"
        "H-3,ada,10000,USD,2024-07-01T10:00:00Z\n"
    )
    result = app.test_cli_runner().invoke(main, ["import", "orders", str(orders)])
    assert result.exit_code == 0, result.output

    earned = dict(session.execute(select(Order.order_id, Order.points)).all())
    assert earned == {"H-1": 100, "H-2": 100, "H-3": 100}
    assert order(session, ada.id, 10000, order_id="today")["points"] == 100


def test_an_item_refund_of_a_wholly_refunded_order_is_refused(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    """After an amount refund of the whole total, an item refund is refused like another
    amount (422 refund-exceeds-order); it used to be accepted and recorded as a refund of 0
    money and 0 points."""
    from loyalty.ledger.errors import RefundExceedsOrderError

    m = member()
    items = [{"sku": "A", "quantity": 1, "unit_price": 10000}]
    order(session, m, 10000, order_id="o-whole", items=items)
    refund(session, "o-whole", "r-all", amount=10000)

    with pytest.raises(RefundExceedsOrderError):
        refund(session, "o-whole", "r-item", items=[{"sku": "A", "quantity": 1}])
    assert len(refunds_of(session, "o-whole")) == 1
