"""The defects found by reading the ledger against DESIGN.md section 5, one sequence each, and
the order-level reconciliation that `loyalty ledger verify` runs (checked after every test
here, as in every ledger test)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.db import unit_of_work
from loyalty.earning import service as earning_service
from loyalty.ledger import rules, service
from loyalty.ledger.invariants import verify
from loyalty.ledger.models import Entry, Lot, Order, ProgramSettings, Refund
from loyalty.members.models import Member as MemberRow
from tests.ledger.conftest import CLIENT, balance, order, settings

DAY = dt.timedelta(days=1)
Member = Callable[..., str]


def refund(session: Session, order_id: str, refund_id: str, **kwargs: object) -> dict:
    return service.refund_order(
        session, client_id=CLIENT, order_id=order_id, refund_id=refund_id, **kwargs
    ).body


def spend(session: Session, member_id: str, points: int) -> str:
    """Spend points as a reward claim does (inside another area's unit of work)."""
    with unit_of_work(session):
        return service.spend_points(session, member_id=member_id, points=points).id


def give_back(session: Session, redemption_id: str) -> int:
    """Give a redemption's points back, as a cancelled reward claim does."""
    with unit_of_work(session):
        return service.return_redemption(session, redemption_id=redemption_id).points


def order_row(session: Session, order_id: str) -> Order:
    found = session.scalar(
        select(Order).where(Order.order_id == order_id).execution_options(populate_existing=True)
    )
    assert found is not None
    return found


def refunds_of(session: Session, order_id: str) -> list[Refund]:
    return list(
        session.scalars(
            select(Refund)
            .join(Order, Order.id == Refund.order_pk)
            .where(Order.order_id == order_id)
            .order_by(Refund.created_at, Refund.id)
            .execution_options(populate_existing=True)
        )
    )


# --- 1. a refund's shortfall is taken from the order's points when they come back ----------


def test_points_released_after_a_refund_go_to_its_shortfall(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = member()
    order(session, m, 10000, order_id="o-held", placed_at=clock.now() - 15 * DAY)
    hold = service.place_hold(session, member_id=m, points=100).hold
    result = refund(session, "o-held", "r-1", amount=10000)
    assert (result["points_reversed"], result["shortfall"]) == (100, 100)
    assert balance(session, m) == (0, 0, 100)

    released = service.release_hold(session, hold_id=hold.id)
    assert released.balance.as_dict() == {"available": 0, "pending": 0, "held": 0}
    assert balance(session, m) == (0, 0, 0)
    (only,) = refunds_of(session, "o-held")
    assert (only.shortfall, only.outstanding) == (100, 0)


def test_a_partial_capture_after_a_refund_gives_its_rest_to_the_shortfall(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = member()
    order(session, m, 10000, order_id="o-cap", placed_at=clock.now() - 15 * DAY)
    hold = service.place_hold(session, member_id=m, points=100).hold
    refund(session, "o-cap", "r-1", amount=10000)
    service.capture_hold(session, hold_id=hold.id, points=30)
    assert balance(session, m) == (0, 0, 0)
    (only,) = refunds_of(session, "o-cap")
    assert only.outstanding == 30  # the 30 spent can never come back


def test_points_of_a_cancelled_claim_after_a_refund_go_to_its_shortfall(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = member()
    order(session, m, 10000, order_id="o-claim", placed_at=clock.now() - 15 * DAY)
    redemption = spend(session, m, 100)
    refund(session, "o-claim", "r-1", amount=10000)
    assert give_back(session, redemption) == 100
    assert balance(session, m) == (0, 0, 0)


def test_a_refund_covered_by_other_points_gives_them_back_when_the_hold_ends(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    """The refund takes other available points in place of the held ones; a release then
    gives those other points back, with their own expiry, and the refunded order keeps
    nothing."""
    m = member()
    order(session, m, 10000, order_id="o-first", placed_at=clock.now() - 15 * DAY)
    service.adjust(session, member_id=m, points=100, reason="goodwill")
    hold = service.place_hold(session, member_id=m, points=100).hold  # the order's points
    result = refund(session, "o-first", "r-1", amount=10000)
    assert (result["points_reversed"], result["shortfall"]) == (100, 0)
    assert balance(session, m) == (0, 0, 100)
    service.release_hold(session, hold_id=hold.id)
    assert balance(session, m) == (100, 0, 0)
    lots = session.execute(
        select(Entry.kind, Lot.remaining)
        .join(Entry, Entry.id == Lot.entry_id)
        .where(Entry.member_id == m)
        .execution_options(populate_existing=True)
    ).all()
    assert sorted(lots) == [("accrual", 0), ("adjustment", 100)]


def test_points_released_after_a_refund_repay_its_debt(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    settings(session, refund_policy="allow_negative")
    m = member()
    order(session, m, 10000, order_id="o-debt", placed_at=clock.now() - 15 * DAY)
    hold = service.place_hold(session, member_id=m, points=100).hold
    refund(session, "o-debt", "r-1", amount=10000)
    assert balance(session, m) == (-100, 0, 100)
    service.release_hold(session, hold_id=hold.id)
    assert balance(session, m) == (0, 0, 0)


def test_debt_repaid_by_new_points_moves_the_hold_onto_them(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    """Under allow_negative, new points repay a refund's debt; the hold that still held the
    refunded order's points then holds the new ones, so a release gives the new ones back."""
    settings(session, refund_policy="allow_negative")
    m = member()
    order(session, m, 10000, order_id="o-debt", placed_at=clock.now() - 15 * DAY)
    hold = service.place_hold(session, member_id=m, points=100).hold
    refund(session, "o-debt", "r-1", amount=10000)
    service.adjust(session, member_id=m, points=100, reason="goodwill")
    assert balance(session, m) == (0, 0, 100)
    service.release_hold(session, hold_id=hold.id)
    assert balance(session, m) == (100, 0, 0)


def lots_by_kind(session: Session, member_id: str) -> list[tuple[str, int]]:
    """(kind of the crediting entry, remaining) of the member's lots, sorted."""
    rows = session.execute(
        select(Entry.kind, Lot.remaining)
        .join(Entry, Entry.id == Lot.entry_id)
        .where(Entry.member_id == member_id)
        .execution_options(populate_existing=True)
    )
    return sorted((kind, remaining) for kind, remaining in rows)


def outstanding_of(session: Session, order_id: str) -> int:
    return sum(r.outstanding for r in refunds_of(session, order_id))


def test_debt_repaid_when_a_hold_ends_re_points_the_holds_and_claims_still_open(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    """Under allow_negative, other points stood in for part of a hold of the refunded
    order's points. When that hold ends (released, or timed out) its points repay the
    refund's debt: the order's own points are taken, and the other points stand in for
    order points that a hold or claim still open keeps, never for the hold that is ending
    (its points are already back). So the open ones keep no more of the order's points than
    the refund has outstanding, and when they come back the refunded order keeps nothing."""
    settings(session, refund_policy="allow_negative")
    m = member()
    order(session, m, 10000, order_id="o-debt", placed_at=clock.now() - 15 * DAY)
    claim = spend(session, m, 50)
    service.adjust(session, member_id=m, points=3, reason="goodwill")  # expires a day later
    first = service.place_hold(session, member_id=m, points=25, expires_in=60).hold
    second = service.place_hold(session, member_id=m, points=25).hold
    refund(session, "o-debt", "r-1", amount=10000)
    # The 3 other points now stand in for 3 of the order's points in the first hold (the
    # one that ends soonest).
    assert balance(session, m) == (-97, 0, 50)
    assert outstanding_of(session, "o-debt") == 97

    clock.advance(dt.timedelta(minutes=2))  # the first hold times out: 22 of the order's
    assert balance(session, m) == (-72, 0, 25)  # points and the 3 others repay debt
    assert service.get_hold(session, first.id).status == "expired"
    # The other 3 now stand in for the order's points in the second hold: the order keeps
    # its 22 there and the claim's 50, all outstanding.
    assert outstanding_of(session, "o-debt") == 72
    assert verify(session) == []

    service.release_hold(session, hold_id=second.id)  # 22 of the order's, 3 others
    assert balance(session, m) == (-47, 0, 0)
    assert outstanding_of(session, "o-debt") == 47  # the claim's 47
    assert verify(session) == []

    # The claim is cancelled: the order's 47 points are taken for the debt, and the member
    # is left with the 3 points of the adjustment, none of the refunded order's.
    assert give_back(session, claim) == 50
    assert balance(session, m) == (3, 0, 0)
    assert outstanding_of(session, "o-debt") == 0
    assert lots_by_kind(session, m) == [("accrual", 0), ("adjustment", 3)]


def test_debt_repaid_when_a_claim_is_cancelled_re_points_the_claims_still_open(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    """The same for a cancelled reward claim that other points partly stood in for: the
    other points it gives back stand in for the order's points in another open claim, not
    in the cancelled one."""
    settings(session, refund_policy="allow_negative")
    m = member()
    order(session, m, 10000, order_id="o-debt", placed_at=clock.now() - 15 * DAY)
    older = spend(session, m, 50)
    newer = spend(session, m, 50)
    service.adjust(session, member_id=m, points=3, reason="goodwill")
    refund(session, "o-debt", "r-1", amount=10000)
    # The 3 other points stand in for 3 of the order's points in the newer claim.
    assert balance(session, m) == (-97, 0, 0)

    assert give_back(session, newer) == 50  # 47 of the order's, 3 others
    assert balance(session, m) == (-47, 0, 0)
    assert outstanding_of(session, "o-debt") == 47  # the older claim's 47
    assert verify(session) == []

    assert give_back(session, older) == 50
    assert balance(session, m) == (3, 0, 0)
    assert outstanding_of(session, "o-debt") == 0
    assert lots_by_kind(session, m) == [("accrual", 0), ("adjustment", 3)]


def test_debt_repaid_by_a_cancelled_claim_is_not_taken_for_expired_points(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    """Under allow_negative: a claim spent the order's points, a partial refund left debt,
    the cancelled claim's points came back and repaid it. The order's last points, now held,
    are refunded: they are in a hold, not expired, so the refund makes them debt (the order
    keeps nothing it does not owe), and the hold's release repays it. (Found by the model
    test: the points that repaid the debt were counted as kept by the cancelled claim, which
    is how a claim's expired points are counted.)"""
    settings(session, refund_policy="allow_negative")
    m = member()
    order(session, m, 10000, order_id="o-debt", placed_at=clock.now() - 15 * DAY)
    claim = spend(session, m, 100)
    refund(session, "o-debt", "r-1", amount=7500)
    assert balance(session, m) == (-75, 0, 0)
    assert give_back(session, claim) == 100
    assert balance(session, m) == (25, 0, 0)
    hold = service.place_hold(session, member_id=m, points=25).hold

    refund(session, "o-debt", "r-2", amount=2500)
    assert balance(session, m) == (-25, 0, 25)
    (_, second) = refunds_of(session, "o-debt")
    assert (second.points_expired, second.debt, second.outstanding) == (0, 25, 25)
    assert verify(session) == []

    service.release_hold(session, hold_id=hold.id)
    assert balance(session, m) == (0, 0, 0)
    assert outstanding_of(session, "o-debt") == 0


# --- 2. expired points are not reversed again ----------------------------------------------


def test_refunding_an_order_whose_points_expired_takes_nothing_else(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    settings(session, expiry_policy="calendar", expiry_months=1, expiry_period="year")
    clock.set(dt.datetime(2027, 11, 1, 12, tzinfo=dt.UTC))
    m = member()
    order(session, m, 10000, order_id="o-exp")
    clock.set(dt.datetime(2027, 12, 1, 12, tzinfo=dt.UTC))
    assert balance(session, m) == (100, 0, 0)
    clock.set(dt.datetime(2028, 1, 2, 12, tzinfo=dt.UTC))
    service.adjust(session, member_id=m, points=50, reason="goodwill")
    clock.set(dt.datetime(2028, 1, 5, 12, tzinfo=dt.UTC))
    result = refund(session, "o-exp", "r-1", amount=10000)
    assert (result["points_reversed"], result["shortfall"]) == (100, 0)
    assert balance(session, m) == (50, 0, 0)
    (only,) = refunds_of(session, "o-exp")
    assert only.points_expired == 100
    assert service.get_balance(session, m).lifetime_earned == 0  # adjustments are not earned


def test_held_points_that_expired_are_not_reversed_again(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    settings(session, expiry_policy="rolling", expiry_months=1)
    m = member()
    order(session, m, 10000, order_id="o-late", placed_at=clock.now() - 15 * DAY)
    hold = service.place_hold(session, member_id=m, points=100, expires_in=7 * 86400).hold
    clock.advance(31 * DAY - 15 * DAY + DAY)  # the lot expires while held
    service.adjust(session, member_id=m, points=40, reason="goodwill")
    assert service.get_hold(session, hold.id).status in ("held", "expired")
    refund(session, "o-late", "r-1", amount=10000)
    assert balance(session, m)[0] == 40


# --- 3. points never expire before they can be spent ---------------------------------------


def test_calendar_expiry_counts_from_activation(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    settings(session, expiry_policy="calendar", expiry_months=1, expiry_period="year")
    clock.set(dt.datetime(2026, 12, 20, 12, tzinfo=dt.UTC))
    m = member()
    order(session, m, 10000)
    clock.set(dt.datetime(2027, 1, 4, 12, tzinfo=dt.UTC))
    assert balance(session, m) == (100, 0, 0)
    report = service.get_balance(session, m)
    assert report.expiring == []  # they expire at the end of 2027, not in 90 days


def test_rolling_validity_shorter_than_the_return_window(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    settings(session, expiry_policy="rolling", expiry_months=1, pending_days=60)
    m = member()
    order(session, m, 10000)
    clock.advance(61 * DAY)
    assert balance(session, m) == (100, 0, 0)
    clock.advance(31 * DAY)
    assert balance(session, m) == (0, 0, 0)


def test_calendar_periods_end_in_the_programmes_time_zone() -> None:
    auckland = "Pacific/Auckland"
    activated = dt.datetime(2027, 6, 1, tzinfo=dt.UTC)
    end = rules.expiry_for(activated, "calendar", 1, "year", auckland)
    assert end == dt.datetime(2027, 12, 31, 11, tzinfo=dt.UTC)  # midnight NZDT, UTC+13
    # Activated on New Year's morning in Auckland (still 31 December in UTC): the next year.
    new_year = dt.datetime(2027, 12, 31, 12, tzinfo=dt.UTC)
    assert rules.expiry_for(new_year, "calendar", 1, "year", auckland) == dt.datetime(
        2028, 12, 31, 11, tzinfo=dt.UTC
    )
    rolling = rules.expiry_for(activated, "rolling", 1, "year", auckland)
    assert rolling == dt.datetime(2027, 7, 1, 12, tzinfo=dt.UTC)  # end of 2 July, NZST UTC+12


def test_the_programme_time_zone_is_a_setting(session: Session, clock: FrozenClock) -> None:
    assert service.get_settings(session).timezone == "UTC"
    settings(session, timezone="Europe/Berlin")
    assert service.get_settings(session).timezone == "Europe/Berlin"


# --- 4. a refund's replay is its first response ---------------------------------------------


def test_a_refunds_replay_repeats_its_first_response(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    from loyalty.referrals import service as referrals_service

    referrals_service.update_settings(
        session, changes={"referrer_points": 50, "referee_points": 25}, actor="test"
    )
    referrer = member()
    code = session.scalar(select(MemberRow.referral_code).where(MemberRow.id == referrer))
    referee = member(referral_code=code)
    order(session, referee, 10000, order_id="o-ref", placed_at=clock.now() - 15 * DAY)
    referrals_service.run_due(session)
    assert balance(session, referee)[0] == 125
    first = refund(session, "o-ref", "r-1", amount=10000)
    again = refund(session, "o-ref", "r-1", amount=10000)
    assert again == first
    assert first["balance"] == {"available": 0, "pending": 0, "held": 0}


# --- 5, 6. refunds by item and by amount ----------------------------------------------------


def test_item_refunds_share_an_order_discount(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = member()
    items = [
        {"sku": "A", "quantity": 1, "unit_price": 5000},
        {"sku": "B", "quantity": 1, "unit_price": 5000},
    ]
    assert order(session, m, 5000, order_id="o-disc", items=items)["points"] == 50
    first = refund(session, "o-disc", "r-a", items=[{"sku": "A", "quantity": 1}])
    assert first["points_reversed"] == 25
    assert order_row(session, "o-disc").amount_refunded == 2500
    refund(session, "o-disc", "r-b", items=[{"sku": "B", "quantity": 1}])
    row = order_row(session, "o-disc")
    assert (row.amount_refunded, row.points_reversed) == (5000, 50)


def test_item_and_amount_refunds_mixed_reverse_every_point(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    earning_service.create_multiplier(
        session, actor="test", scope="sku", match="A", multiplier=Decimal(2), label="A x2"
    )
    m = member()
    items = [
        {"sku": "A", "quantity": 1, "unit_price": 9000},
        {"sku": "B", "quantity": 1, "unit_price": 1000},
    ]
    assert order(session, m, 10000, order_id="o-mix", items=items)["points"] == 190
    assert (
        refund(session, "o-mix", "r-b", items=[{"sku": "B", "quantity": 1}])["points_reversed"]
        == 10
    )
    assert refund(session, "o-mix", "r-rest", amount=9000)["points_reversed"] == 180
    row = order_row(session, "o-mix")
    assert (row.amount_refunded, row.points_reversed) == (10000, 190)
    assert balance(session, m) == (0, 0, 0)


def test_an_amount_refund_is_shared_over_the_items_not_yet_refunded(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    earning_service.create_multiplier(
        session, actor="test", scope="sku", match="A", multiplier=Decimal(2), label="A x2"
    )
    m = member()
    items = [
        {"sku": "A", "quantity": 2, "unit_price": 4500},
        {"sku": "B", "quantity": 1, "unit_price": 1000},
    ]
    order(session, m, 10000, order_id="o-share", items=items)
    refund(session, "o-share", "r-1", amount=5000)
    refund(session, "o-share", "r-2", items=[{"sku": "A", "quantity": 2}])
    refund(session, "o-share", "r-3", items=[{"sku": "B", "quantity": 1}])
    row = order_row(session, "o-share")
    assert (row.amount_refunded, row.points_reversed) == (10000, 190)


# --- 8. inactivity ---------------------------------------------------------------------------


def test_held_points_expire_with_the_rest_after_inactivity(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    settings(session, expiry_policy="inactivity", expiry_months=1)
    m = member()
    order(session, m, 10000, placed_at=clock.now() - 15 * DAY)
    clock.advance(29 * DAY)
    hold = service.place_hold(session, member_id=m, points=100, expires_in=7 * 86400).hold
    clock.advance(4 * DAY)  # past the inactivity deadline, the hold still open
    assert balance(session, m) == (0, 0, 100)
    service.release_hold(session, hold_id=hold.id)
    assert balance(session, m) == (0, 0, 0)


def test_an_adjustment_to_a_lapsed_member_counts_as_activity(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    settings(session, expiry_policy="inactivity", expiry_months=1)
    m = member()
    order(session, m, 10000, placed_at=clock.now() - 15 * DAY)
    clock.advance(60 * DAY)
    assert balance(session, m) == (0, 0, 0)
    service.adjust(session, member_id=m, points=50, reason="goodwill")
    assert balance(session, m) == (50, 0, 0)
    clock.advance(20 * DAY)
    assert balance(session, m) == (50, 0, 0)
    clock.advance(15 * DAY)
    assert balance(session, m) == (0, 0, 0)


def sweep_cursor(session: Session) -> str | None:
    """Where the inactivity sweep stands (None: no sweep pending), read from the row."""
    return session.scalar(select(ProgramSettings.due_sweep_after))


def test_switching_inactivity_on_marks_wallets_in_batches(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    members = [member() for _ in range(5)]
    for m in members:
        order(session, m, 1000, placed_at=clock.now() - 15 * DAY)
    service.update_settings(
        session, changes={"expiry_policy": "inactivity", "expiry_months": 1}, actor="t"
    )
    assert sweep_cursor(session) is None
    clock.advance(40 * DAY)
    while service.settle_due_batch(session, batch_size=2):
        pass
    assert all(balance(session, m) == (0, 0, 0) for m in members)


# --- 10. a clawback that takes nothing still lowers what was earned -------------------------


def test_a_clawback_that_finds_nothing_still_lowers_lifetime_earned(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = member()
    with unit_of_work(session):
        service.credit_bonus(session, member_id=m, points=30, reason="badge")
    service.redeem(session, member_id=m, points=30)
    with unit_of_work(session):
        move = service.reverse_bonus(session, member_id=m, points=30, reason="badge revoked")
    assert move.points == 0
    assert service.get_balance(session, m).lifetime_earned == 0


# --- the books catch these defects -----------------------------------------------------------


def test_verify_reports_points_left_on_a_wholly_refunded_order(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    m = member()
    order(session, m, 10000, order_id="o-v", placed_at=clock.now() - 15 * DAY)
    refund(session, "o-v", "r-1", amount=10000)
    assert verify(session) == []
    # Make the books wrong behind the ledger's back: the order's lot gets its points again.
    session.execute(update(Order).where(Order.order_id == "o-v").values(points_reversed=90))
    found = [str(v) for v in verify(session)]
    assert any("refunds add up to" in v for v in found), found
    session.rollback()


@pytest.mark.parametrize("column", ["balance_available", "balance_held"])
def test_verify_checks_balance_after_on_every_entry(
    session: Session, member: Member, clock: FrozenClock, column: str
) -> None:
    m = member()
    order(session, m, 10000, placed_at=clock.now() - 15 * DAY)
    service.redeem(session, member_id=m, points=10)
    assert verify(session) == []
    first = session.scalar(select(Entry).where(Entry.member_id == m).order_by(Entry.id))
    assert first is not None
    # Entries are append-only: a copy of the wallet's first entry with a wrong balance_after
    # (balanced, so only the running-balance check can see it) stands in for a bad write.
    wrong = Entry(
        wallet_id=first.wallet_id,
        member_id=m,
        kind="adjustment",
        points=0,
        balance_available=first.balance_available + (7 if column == "balance_available" else 0),
        balance_pending=first.balance_pending,
        balance_held=first.balance_held + (7 if column == "balance_held" else 0),
    )
    session.add(wrong)
    session.flush()
    found = [str(v) for v in verify(session)]
    assert any(f"entry {wrong.id}: balance_after" in v for v in found), found
    session.rollback()


def test_an_interrupted_inactivity_switch_is_finished_by_the_job(
    session: Session, member: Member, clock: FrozenClock
) -> None:
    from loyalty import jobs
    from loyalty.ledger.models import Wallet

    members = [member() for _ in range(3)]
    for m in members:
        order(session, m, 1000, placed_at=clock.now() - 15 * DAY)
    settings(session, expiry_policy="inactivity", expiry_months=1)
    # As if the process had stopped right after the settings changed: nothing marked yet.
    with unit_of_work(session):
        session.execute(update(Wallet).values(next_due_at=None))
        session.execute(update(ProgramSettings).values(due_sweep_after=""))
    clock.advance(40 * DAY)
    report = jobs.run_due(session, batch_size=2)
    assert report.counts["wallets marked due"] == 3
    assert sweep_cursor(session) is None
    assert all(balance(session, m) == (0, 0, 0) for m in members)


def test_a_job_pass_ends_even_if_a_wallet_stayed_due(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wallet that a defect left due after it was settled is settled again by every batch;
    a pass stops after what was due when it began (plus one batch), rather than spin."""
    from loyalty import jobs

    batches: list[int] = []

    def always_one(session: Session, *, batch_size: int = 50, actor: str = "jobs") -> int:
        batches.append(batch_size)
        return 1

    monkeypatch.setattr(jobs.ledger_service, "settle_due_batch", always_one)
    report = jobs.run_due(session, batch_size=5)
    assert report.wallets_settled == len(batches) == 5  # nothing was due: one batch's worth
