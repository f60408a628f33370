"""Rules of the ledger, one scenario each, through the service layer on PostgreSQL.
The invariants are checked after every test (see conftest)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from loyalty.auth import service as auth_service
from loyalty.clock import FrozenClock
from loyalty.db import unit_of_work
from loyalty.errors import InvalidFieldError, MemberClosedError, MemberNotActiveError
from loyalty.ledger import service
from loyalty.ledger.errors import (
    CaptureExceedsHoldError,
    HoldNotFoundError,
    HoldNotHeldError,
    InsufficientPointsError,
    OrderConflictError,
    OrderNotFoundError,
    RedemptionAlreadyReturnedError,
    RefundConflictError,
    RefundExceedsOrderError,
)
from loyalty.ledger.models import Entry, Lot
from loyalty.members import service as members_service
from loyalty.members.errors import MemberNotFoundError
from tests.ledger.conftest import CLIENT, START, balance, order, settings

DAY = dt.timedelta(days=1)
Member = Callable[..., str]


def kinds(session: Session, member_id: str) -> list[tuple[str, int]]:
    page = service.list_entries(session, member_id, limit=200)
    return [(e.kind, e.points) for e in reversed(page.items)]


def active_points(session: Session, member_id: str, clock: FrozenClock, total: int) -> None:
    """Credit ``total`` cents worth of points that are active at once."""
    order(session, member_id, total, placed_at=clock.now() - 15 * DAY)


# --- accrual and activation -----------------------------------------------------------------


def test_order_points_are_pending_for_the_return_window(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = member()
    result = order(session, m, 12345)
    assert result["points"] == 123
    assert result["status"] == "pending"
    assert result["activates_at"] == "2026-03-24T12:00:00Z"
    assert balance(session, m) == (0, 123, 0)

    clock.advance(14 * DAY - dt.timedelta(seconds=1))
    assert balance(session, m) == (0, 123, 0)
    clock.advance(dt.timedelta(seconds=1))
    assert balance(session, m) == (123, 0, 0)
    assert kinds(session, m) == [("accrual", 123), ("activation", 123)]
    report = service.get_balance(session, m)
    assert report.lifetime_earned == 123


def test_old_orders_are_active_at_once(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = member()
    result = order(session, m, 5000, placed_at=clock.now() - 30 * DAY)
    assert (result["status"], result["balance"]) == (
        "active",
        {"available": 50, "pending": 0, "held": 0},
    )


def test_no_pending_period(session: Session, member: Member, clock: FrozenClock) -> None:
    settings(session, pending_days=0)
    m = member()
    assert order(session, m, 5000)["status"] == "active"
    assert balance(session, m) == (50, 0, 0)


def test_earning_rate_and_rounding(session: Session, member: Member, clock: FrozenClock) -> None:
    from decimal import Decimal

    m = member()
    settings(session, earn_rate=Decimal("2.5"), rounding="half_up")
    assert order(session, m, 1019)["points"] == 25  # 10.19 * 2.5 = 25.475
    assert order(session, m, 100, currency="JPY")["points"] == 250
    assert order(session, m, 1, currency="USD")["points"] == 0


def test_zero_point_orders_are_recorded_without_entries(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = member()
    assert order(session, m, 99)["points"] == 0
    assert kinds(session, m) == []


def test_same_order_twice_is_one_accrual(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = member()
    first = service.accrue_order(
        session, client_id=CLIENT, order_id="A-1", member_id=m, total=5000, currency="USD"
    )
    again = service.accrue_order(
        session, client_id=CLIENT, order_id="A-1", member_id=m, total=5000, currency="usd"
    )
    assert (first.created, again.created) == (True, False)
    assert again.body == first.body
    assert balance(session, m) == (0, 50, 0)
    with pytest.raises(OrderConflictError):
        service.accrue_order(
            session, client_id=CLIENT, order_id="A-1", member_id=m, total=5001, currency="USD"
        )
    # Order ids are per channel: another client of the channel (rotated credentials) gets
    # the first result; another channel may use the same id for an order of its own.
    rotated = service.accrue_order(
        session, client_id="cli_other", order_id="A-1", member_id=m, total=5000, currency="USD"
    )
    assert (rotated.created, rotated.body) == (False, first.body)
    pos = auth_service.create_channel(session, name="Store POS")
    other = service.accrue_order(
        session,
        channel_id=pos.id,
        client_id="cli_pos",
        order_id="A-1",
        member_id=m,
        total=5000,
        currency="USD",
    )
    assert other.created
    assert balance(session, m) == (0, 100, 0)


def test_orders_need_an_active_member(session: Session, member: Member, clock: FrozenClock) -> None:
    m = member()
    members_service.update_member(session, member_id=m, changes={"status": "suspended"})
    with pytest.raises(MemberNotActiveError) as caught:
        order(session, m, 5000)
    assert caught.value.data["member_status"] == "suspended"
    with pytest.raises(MemberNotFoundError):
        order(session, "mem_missing", 5000)


def test_order_validation(session: Session, member: Member, clock: FrozenClock) -> None:
    m = member()
    with pytest.raises(InvalidFieldError) as caught:
        order(session, m, 5000, currency="XAU")
    assert caught.value.field == "currency"
    with pytest.raises(InvalidFieldError):
        order(
            session,
            m,
            5000,
            items=[
                {"sku": "a", "quantity": 1, "unit_price": 1},
                {"sku": "a", "quantity": 1, "unit_price": 1},
            ],
        )


# --- redemptions and lots ---------------------------------------------------------------------


def test_redemptions_take_the_soonest_expiring_points_first(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = member()
    active_points(session, m, clock, 10000)  # 100 points, expire in ~36 months
    clock.advance(30 * DAY)
    active_points(session, m, clock, 5000)  # 50 points, expire a month later
    service.adjust(session, member_id=m, points=20, reason="goodwill")
    settings(session, expiry_policy="none")
    service.adjust(session, member_id=m, points=7, reason="no expiry")
    assert balance(session, m) == (177, 0, 0)

    service.redeem(session, member_id=m, points=120)
    lots = session.scalars(
        select(Lot)
        .join(Entry, Lot.entry_id == Entry.id)
        .where(Entry.member_id == m)
        .order_by(Lot.id)
    ).all()
    assert [(lot.amount, lot.remaining) for lot in lots] == [(100, 0), (50, 30), (20, 20), (7, 7)]
    service.redeem(session, member_id=m, points=57)
    assert [lot.remaining for lot in lots] == [0, 0, 0, 0] or True
    session.expire_all()
    lots = session.scalars(select(Lot).where(Lot.id.in_([lot.id for lot in lots]))).all()
    assert sorted(lot.remaining for lot in lots) == [0, 0, 0, 0]
    assert balance(session, m) == (0, 0, 0)


def test_redeeming_more_than_available_is_refused(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = member()
    order(session, m, 10000)  # pending points cannot be spent
    with pytest.raises(InsufficientPointsError) as caught:
        service.redeem(session, member_id=m, points=1)
    assert caught.value.data == {"available": 0, "requested": 1}
    clock.advance(15 * DAY)
    with pytest.raises(InsufficientPointsError):
        service.redeem(session, member_id=m, points=101)
    result = service.redeem(session, member_id=m, points=100, reference="cart-9")
    assert result.id.startswith("red_")
    assert result.balance.as_dict() == {"available": 0, "pending": 0, "held": 0}


def test_suspended_members_cannot_redeem(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = member()
    active_points(session, m, clock, 10000)
    members_service.update_member(session, member_id=m, changes={"status": "suspended"})
    with pytest.raises(MemberNotActiveError):
        service.redeem(session, member_id=m, points=1)
    with pytest.raises(MemberNotActiveError):
        service.place_hold(session, member_id=m, points=1)


# --- holds ------------------------------------------------------------------------------------


def test_hold_then_full_capture(session: Session, member: Member, clock: FrozenClock) -> None:
    m = member()
    active_points(session, m, clock, 10000)
    held = service.place_hold(session, member_id=m, points=60, reference="cart-1")
    assert held.hold.status == "held"
    assert held.hold.expires_at == clock.now() + dt.timedelta(minutes=15)
    assert held.balance.as_dict() == {"available": 40, "pending": 0, "held": 60}
    captured = service.capture_hold(session, hold_id=held.hold.id)
    assert (captured.hold.status, captured.hold.captured_points) == ("captured", 60)
    assert captured.hold.redemption_id is not None
    assert captured.balance.as_dict() == {"available": 40, "pending": 0, "held": 0}
    with pytest.raises(HoldNotHeldError) as caught:
        service.capture_hold(session, hold_id=held.hold.id)
    assert caught.value.data["hold_status"] == "captured"
    with pytest.raises(HoldNotHeldError):
        service.release_hold(session, hold_id=held.hold.id)


def test_partial_capture_returns_the_rest_at_once(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = member()
    active_points(session, m, clock, 10000)
    held = service.place_hold(session, member_id=m, points=60)
    captured = service.capture_hold(session, hold_id=held.hold.id, points=25)
    assert captured.hold.captured_points == 25
    assert captured.balance.as_dict() == {"available": 75, "pending": 0, "held": 0}
    assert kinds(session, m)[-2:] == [("hold", -60), ("capture", -25)]


def test_capture_more_than_held(session: Session, member: Member, clock: FrozenClock) -> None:
    m = member()
    active_points(session, m, clock, 10000)
    held = service.place_hold(session, member_id=m, points=60)
    with pytest.raises(CaptureExceedsHoldError):
        service.capture_hold(session, hold_id=held.hold.id, points=61)
    with pytest.raises(HoldNotFoundError):
        service.capture_hold(session, hold_id="hld_missing")


def test_release_restores_exactly_the_lots_taken(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = member()
    active_points(session, m, clock, 3000)
    clock.advance(40 * DAY)
    active_points(session, m, clock, 5000)
    before = {lot.id: lot.remaining for lot in session.scalars(select(Lot))}
    held = service.place_hold(session, member_id=m, points=70)
    service.release_hold(session, hold_id=held.hold.id)
    session.expire_all()
    after = {lot.id: lot.remaining for lot in session.scalars(select(Lot))}
    assert after == before
    assert balance(session, m) == (80, 0, 0)
    with pytest.raises(HoldNotHeldError) as caught:
        service.release_hold(session, hold_id=held.hold.id)
    assert caught.value.data["hold_status"] == "released"


def test_holds_time_out(session: Session, member: Member, clock: FrozenClock) -> None:
    m = member()
    active_points(session, m, clock, 10000)
    held = service.place_hold(session, member_id=m, points=60, expires_in=120)
    clock.advance(dt.timedelta(seconds=119))
    assert balance(session, m) == (40, 0, 60)
    clock.advance(dt.timedelta(seconds=1))
    with pytest.raises(HoldNotHeldError) as caught:
        service.capture_hold(session, hold_id=held.hold.id)
    assert caught.value.data["hold_status"] == "expired"
    # the timeout was applied and committed although the capture was refused
    assert service.get_hold(session, held.hold.id).status == "expired"
    assert balance(session, m) == (100, 0, 0)


def test_timed_out_holds_are_released_by_the_job(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = member()
    active_points(session, m, clock, 10000)
    held = service.place_hold(session, member_id=m, points=60)
    clock.advance(dt.timedelta(minutes=16))
    assert service.settle_due_batch(session) == 1
    assert service.get_hold(session, held.hold.id).status == "expired"
    assert service.settle_due_batch(session) == 0
    assert balance(session, m) == (100, 0, 0)


# --- refunds ----------------------------------------------------------------------------------


def refund(session: Session, order_id: str, refund_id: str, **kwargs: object) -> dict[str, object]:
    return service.refund_order(
        session,
        client_id=CLIENT,
        order_id=order_id,
        refund_id=refund_id,
        **kwargs,  # type: ignore[arg-type]
    ).body


def test_refund_inside_the_window_cancels_pending_points(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = member()
    order(session, m, 10000, order_id="A")
    result = refund(session, "A", "R1", amount=2500)
    assert result["points_reversed"] == 25
    assert result["balance"] == {"available": 0, "pending": 75, "held": 0}
    clock.advance(15 * DAY)
    assert balance(session, m) == (75, 0, 0)
    assert service.get_balance(session, m).lifetime_earned == 75


def test_refunds_are_proportional_and_a_full_refund_reverses_everything(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = member()
    order(session, m, 999, order_id="A", placed_at=clock.now() - 20 * DAY)  # 9 points
    reversed_ = [
        refund(session, "A", f"R{i}", amount=amount)["points_reversed"]
        for i, amount in enumerate([333, 333, 333])
    ]
    assert sum(reversed_) == 9  # type: ignore[arg-type]
    assert balance(session, m) == (0, 0, 0)
    with pytest.raises(RefundExceedsOrderError):
        refund(session, "A", "R4", amount=1)


def test_refund_by_items(session: Session, member: Member, clock: FrozenClock) -> None:
    m = member()
    items = [
        {"sku": "shoe", "category": "shoes", "quantity": 2, "unit_price": 4000},
        {"sku": "sock", "category": "socks", "quantity": 4, "unit_price": 500},
    ]
    order(session, m, 10000, order_id="A", items=items)  # 100 points: 80 + 20
    assert (
        refund(session, "A", "R1", items=[{"sku": "shoe", "quantity": 1}])["points_reversed"] == 40
    )
    assert (
        refund(session, "A", "R2", items=[{"sku": "sock", "quantity": 3}])["points_reversed"] == 15
    )
    with pytest.raises(RefundExceedsOrderError):
        refund(session, "A", "R3", items=[{"sku": "sock", "quantity": 2}])
    with pytest.raises(InvalidFieldError):
        refund(session, "A", "R4", items=[{"sku": "hat", "quantity": 1}])
    assert balance(session, m) == (0, 45, 0)


def test_refund_takes_the_orders_own_lots(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = member()
    order(session, m, 5000, order_id="OLD", placed_at=clock.now() - 20 * DAY)
    order(session, m, 3000, order_id="NEW", placed_at=clock.now() - 20 * DAY)
    refund(session, "NEW", "R1", amount=3000)
    lots = {lot.order_pk: lot.remaining for lot in session.scalars(select(Lot).order_by(Lot.id))}
    assert sorted(lots.values()) == [0, 50]


def test_refund_of_spent_points_within_balance_records_a_shortfall(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = member()
    order(session, m, 10000, order_id="A", placed_at=clock.now() - 20 * DAY)
    order(session, m, 3000, order_id="B", placed_at=clock.now() - 20 * DAY)
    service.redeem(session, member_id=m, points=120)
    result = refund(session, "A", "R1", amount=10000)
    # 100 points to take back: 10 are left in the wallet, 90 were spent
    assert (result["points_reversed"], result["shortfall"]) == (100, 90)
    assert result["balance"] == {"available": 0, "pending": 0, "held": 0}


def test_refund_of_spent_points_with_allow_negative_creates_debt_repaid_by_new_points(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    settings(session, refund_policy="allow_negative")
    m = member()
    order(session, m, 10000, order_id="A", placed_at=clock.now() - 20 * DAY)
    service.redeem(session, member_id=m, points=80)
    result = refund(session, "A", "R1", amount=10000)
    assert (result["points_reversed"], result["shortfall"]) == (100, 0)
    assert result["balance"] == {"available": -80, "pending": 0, "held": 0}
    with pytest.raises(InsufficientPointsError):
        service.redeem(session, member_id=m, points=1)

    order(session, m, 5000, order_id="B")  # 50 pending points
    assert balance(session, m) == (-80, 50, 0)
    clock.advance(15 * DAY)
    assert balance(session, m) == (-30, 0, 0)  # activation repaid 50 of the debt
    service.adjust(session, member_id=m, points=40, reason="goodwill")
    assert balance(session, m) == (10, 0, 0)
    entries = service.list_entries(session, m).items
    repaid = [(e.kind, -e.debt_delta) for e in reversed(entries) if e.debt_delta < 0]
    assert repaid == [("activation", 50), ("adjustment", 30)]


def test_refunds_are_idempotent_per_refund_id(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = member()
    order(session, m, 10000, order_id="A")
    first = refund(session, "A", "R1", amount=5000)
    assert refund(session, "A", "R1", amount=5000) == first
    with pytest.raises(RefundConflictError):
        refund(session, "A", "R1", amount=4000)
    with pytest.raises(OrderNotFoundError):
        refund(session, "nope", "R2", amount=1)
    assert balance(session, m) == (0, 50, 0)


# --- adjustments ------------------------------------------------------------------------------


def test_adjustments(session: Session, member: Member, clock: FrozenClock) -> None:
    m = member()
    credit = service.adjust(session, member_id=m, points=30, reason="missed order")
    assert credit.id.startswith("ent_")
    assert credit.balance.as_dict() == {"available": 30, "pending": 0, "held": 0}
    with pytest.raises(InsufficientPointsError):
        service.adjust(session, member_id=m, points=-31, reason="too much")
    debit = service.adjust(session, member_id=m, points=-30, reason="fraud")
    assert debit.balance.available == 0
    entries = service.list_entries(session, m).items
    assert [(e.kind, e.points, e.reason) for e in entries] == [
        ("adjustment", -30, "fraud"),
        ("adjustment", 30, "missed order"),
    ]
    members_service.update_member(session, member_id=m, changes={"status": "closed"})
    with pytest.raises(MemberClosedError):
        service.adjust(session, member_id=m, points=1, reason="x")


# --- expiry -----------------------------------------------------------------------------------


def test_rolling_expiry(session: Session, member: Member, clock: FrozenClock) -> None:
    settings(session, expiry_policy="rolling", expiry_months=12)
    m = member()
    # Earned 2026-03-10, spendable from 2026-03-24: valid 12 months from then.
    order(session, m, 10000, placed_at=clock.now())
    clock.set(dt.datetime(2027, 3, 24, 23, 59, tzinfo=dt.UTC))
    report = service.get_balance(session, m)
    assert (report.available, [(e.points, e.expires_at) for e in report.expiring]) == (
        100,
        [(100, dt.datetime(2027, 3, 25, tzinfo=dt.UTC))],
    )
    clock.set(dt.datetime(2027, 3, 25, tzinfo=dt.UTC))
    assert balance(session, m) == (0, 0, 0)
    assert kinds(session, m)[-1] == ("expiry", -100)


def test_expiring_lists_the_next_90_days_by_day(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    settings(session, expiry_policy="rolling", expiry_months=3)
    m = member()
    service.adjust(session, member_id=m, points=10, reason="a")
    clock.advance(dt.timedelta(hours=2))
    service.adjust(session, member_id=m, points=5, reason="b")
    clock.advance(10 * DAY)
    service.adjust(session, member_id=m, points=7, reason="c")
    clock.advance(5 * DAY)
    report = service.get_balance(session, m)
    assert [(e.points, e.expires_at.date().isoformat()) for e in report.expiring] == [
        (15, "2026-06-11"),
        (7, "2026-06-21"),
    ]


def test_calendar_expiry(session: Session, member: Member, clock: FrozenClock) -> None:
    settings(session, expiry_policy="calendar", expiry_months=1, expiry_period="year")
    m = member()
    service.adjust(session, member_id=m, points=10, reason="a")
    clock.set(dt.datetime(2026, 12, 31, 23, 59, tzinfo=dt.UTC))
    assert balance(session, m) == (10, 0, 0)
    clock.set(dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
    assert balance(session, m) == (0, 0, 0)


def test_no_expiry(session: Session, member: Member, clock: FrozenClock) -> None:
    settings(session, expiry_policy="none")
    m = member()
    service.adjust(session, member_id=m, points=10, reason="a")
    clock.advance(3650 * DAY)
    assert balance(session, m) == (10, 0, 0)


def test_inactivity_expiry(session: Session, member: Member, clock: FrozenClock) -> None:
    settings(session, expiry_policy="inactivity", expiry_months=6)
    m = member()
    order(session, m, 10000, placed_at=clock.now() - 20 * DAY)
    clock.advance(150 * DAY)
    service.redeem(session, member_id=m, points=10)  # activity: the clock restarts
    clock.advance(150 * DAY)
    assert balance(session, m) == (90, 0, 0)
    clock.advance(40 * DAY)
    assert service.settle_due_batch(session) == 1
    assert balance(session, m) == (0, 0, 0)
    assert kinds(session, m)[-1] == ("expiry", -90)


def test_held_points_do_not_expire_until_released(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    settings(session, expiry_policy="rolling", expiry_months=1)
    m = member()
    service.adjust(session, member_id=m, points=10, reason="a")
    held = service.place_hold(session, member_id=m, points=4, expires_in=604800)
    clock.advance(32 * DAY)
    # the hold timed out after the points' expiry: released, then the 4 points expire too
    assert balance(session, m) == (0, 0, 0)
    assert service.get_hold(session, held.hold.id).status == "expired"


def test_each_lot_expires_once(session: Session, member: Member, clock: FrozenClock) -> None:
    settings(session, expiry_policy="rolling", expiry_months=1)
    m = member()
    service.adjust(session, member_id=m, points=10, reason="a")
    clock.advance(40 * DAY)
    assert service.settle_due_batch(session) == 1
    assert service.settle_due_batch(session) == 0
    assert [k for k, _ in kinds(session, m)].count("expiry") == 1


# --- settings, history, guards ----------------------------------------------------------------


def test_settings_defaults_and_update(session: Session, clock: FrozenClock) -> None:
    current = service.get_settings(session)
    assert (current.pending_days, current.expiry_policy, current.expiry_months) == (
        14,
        "rolling",
        36,
    )
    assert (current.refund_policy, current.hold_timeout_seconds, current.rounding) == (
        "within_balance",
        900,
        "floor",
    )
    updated = service.update_settings(session, changes={"pending_days": 30}, actor="me")
    assert (updated.pending_days, updated.updated_by, updated.updated_at) == (30, "me", START)


def test_history_pages_newest_first(session: Session, member: Member, clock: FrozenClock) -> None:
    m = member()
    for i in range(5):
        service.adjust(session, member_id=m, points=i + 1, reason=f"r{i}")
    first = service.list_entries(session, m, limit=2)
    assert [e.points for e in first.items] == [5, 4]
    second = service.list_entries(session, m, limit=2, cursor=first.next_cursor)
    third = service.list_entries(session, m, limit=2, cursor=second.next_cursor)
    assert [e.points for e in second.items + third.items] == [3, 2, 1]
    assert third.next_cursor is None
    assert [e.balance_available for e in first.items] == [15, 10]


def test_history_is_append_only(session: Session, member: Member, clock: FrozenClock) -> None:
    m = member()
    service.adjust(session, member_id=m, points=5, reason="a")
    for statement in ("UPDATE ledger_entries SET points = 6", "DELETE FROM ledger_entries"):
        with pytest.raises(DBAPIError, match="append-only"):
            with session.begin_nested():
                session.execute(text(statement))


def test_unbalanced_entries_are_refused_by_the_database(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = member()
    service.adjust(session, member_id=m, points=5, reason="a")
    wallet_id = session.scalar(select(Entry.wallet_id))
    with pytest.raises(DBAPIError, match="ck_ledger_entries_balanced"):
        with session.begin_nested():
            session.execute(
                text(
                    "INSERT INTO ledger_entries (wallet_id, member_id, kind, points, "
                    "available_delta, pending_delta, held_delta, debt_delta, earned_delta, "
                    "counter_amount, balance_available, balance_pending, balance_held, "
                    "created_at) VALUES (:w, :m, 'adjustment', 5, 5, 0, 0, 0, 0, 0, 5, 0, 0, "
                    "now())"
                ),
                {"w": wallet_id, "m": m},
            )


# --- found in review ----------------------------------------------------------------------------


def test_points_held_while_their_lot_expires_expire_from_the_hold(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    settings(session, expiry_policy="rolling", expiry_months=1)
    m = member()
    service.adjust(session, member_id=m, points=100, reason="seed")  # expires 2026-04-11 00:00
    clock.set(dt.datetime(2026, 4, 10, 23, 50, tzinfo=dt.UTC))
    timed_out = service.place_hold(session, member_id=m, points=60)
    clock.set(dt.datetime(2026, 4, 11, 0, 1, tzinfo=dt.UTC))
    assert service.settle_due_batch(session) == 1  # the 40 points left in the lot expire
    assert balance(session, m) == (0, 0, 60)
    clock.set(dt.datetime(2026, 4, 11, 0, 6, tzinfo=dt.UTC))
    assert service.settle_due_batch(session) == 1  # the hold times out: its 60 expire too
    assert balance(session, m) == (0, 0, 0)
    assert service.get_hold(session, timed_out.hold.id).status == "expired"
    assert kinds(session, m)[-3:] == [("hold", -60), ("expiry", -40), ("expiry", -60)]


def test_partial_capture_after_the_lot_expired(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    settings(session, expiry_policy="rolling", expiry_months=1)
    m = member()
    service.adjust(session, member_id=m, points=100, reason="seed")
    clock.set(dt.datetime(2026, 4, 10, 23, 55, tzinfo=dt.UTC))
    held = service.place_hold(session, member_id=m, points=60, expires_in=3600)
    clock.set(dt.datetime(2026, 4, 11, 0, 5, tzinfo=dt.UTC))
    captured = service.capture_hold(session, hold_id=held.hold.id, points=30)
    assert captured.balance.as_dict() == {"available": 0, "pending": 0, "held": 0}
    assert kinds(session, m)[-3:] == [("expiry", -40), ("expiry", -30), ("capture", -30)]


def test_a_long_lived_job_session_does_not_act_on_stale_rows(
    app: object, session: Session, member: Member, clock: FrozenClock
) -> None:
    from loyalty.db import get_database

    m = member()
    service.adjust(session, member_id=m, points=100, reason="seed")
    service.place_hold(session, member_id=m, points=10, expires_in=60)
    service.place_hold(session, member_id=m, points=20, expires_in=120)
    job = get_database(app).sessionmaker()  # type: ignore[arg-type]
    clock.advance(dt.timedelta(seconds=61))
    assert service.settle_due_batch(job) == 1  # releases the first hold
    cached = job.scalars(select(Lot)).all() + job.scalars(select(Entry)).all()  # kept alive
    from loyalty.ledger.models import Wallet

    cached_wallet = job.scalars(select(Wallet)).all()
    service.redeem(session, member_id=m, points=50)  # another transaction changes the wallet
    clock.advance(dt.timedelta(seconds=60))
    assert service.settle_due_batch(job) == 1  # releases the second hold
    assert cached and cached_wallet
    job.close()
    assert balance(session, m) == (50, 0, 0)


def test_inactivity_applies_to_wallets_only_credited_by_hand(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    settings(session, expiry_policy="inactivity", expiry_months=6)
    m = member()
    service.adjust(session, member_id=m, points=10, reason="welcome")
    clock.advance(190 * DAY)
    assert service.settle_due_batch(session) == 1
    assert balance(session, m) == (0, 0, 0)


def test_orders_cannot_earn_beyond_the_ledgers_range(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    from decimal import Decimal

    settings(session, earn_rate=Decimal(100_000))
    m = member()
    with pytest.raises(InvalidFieldError) as caught:
        order(session, m, 10**15, currency="JPY")
    assert caught.value.field == "total"


# --- helpers other areas call inside their own unit of work ----------------------------------


def _bonus(session: Session, member_id: str, points: int) -> None:
    with unit_of_work(session):
        service.credit_bonus(
            session, member_id=member_id, points=points, reason="badge", reference=("badge", "b1")
        )


def _claw(session: Session, member_id: str, points: int) -> service.PointsMove:
    with unit_of_work(session):
        return service.reverse_bonus(
            session,
            member_id=member_id,
            points=points,
            reason="refunded",
            reference=("badge", "b1"),
        )


def test_bonus_then_clawback_within_balance(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    mid = member()
    _bonus(session, mid, 100)
    assert balance(session, mid) == (100, 0, 0)
    service.redeem(session, member_id=mid, points=70)
    taken = _claw(session, mid, 100)
    assert taken.points == -30  # 70 were already spent: forgiven
    assert balance(session, mid) == (0, 0, 0)
    assert _claw(session, mid, 5).points == 0  # nothing left to take


def test_clawback_with_debt_allowed(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    settings(session, refund_policy="allow_negative")
    mid = member()
    _bonus(session, mid, 100)
    service.redeem(session, member_id=mid, points=70)
    assert _claw(session, mid, 100).points == -100
    assert balance(session, mid) == (-70, 0, 0)
    _bonus(session, mid, 100)  # repays the debt first
    assert balance(session, mid) == (30, 0, 0)


def test_spend_and_return_a_redemption(
    session: Session, member: Callable[..., str], clock: FrozenClock
) -> None:
    mid = member()
    _bonus(session, mid, 100)
    with unit_of_work(session):
        spent = service.spend_points(session, member_id=mid, points=60)
    with unit_of_work(session):
        back = service.return_redemption(session, redemption_id=spent.id)
    assert back.points == 60
    assert balance(session, mid) == (100, 0, 0)
    with pytest.raises(RedemptionAlreadyReturnedError), unit_of_work(session):
        service.return_redemption(session, redemption_id=spent.id)
